"""One experiment layer: build the CLI, fit (and test) in this process, run many fits on the cores.

``make_cli`` is the one place ``EffdlCLI`` is built (``lit-effdl``, the scripts and the tests use it);
``run_fit`` is ``lit-effdl fit --test_after_fit true`` as a function that returns the numbers;
``results_in_order`` runs independent fits in parallel worker processes.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

from lit_effdl.callbacks.run_status import write_run_status
from lit_effdl.cli import EffdlCLI
from lit_effdl.data.datamodule import LabelBudgetDataModule
from lit_effdl.methods.base import BaseMethod
from lit_effdl.runtime import exit_with_parent, tune_allocator

LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning")
ADVICE_WARNINGS = (".*(num_workers|does not have many workers|eval mode|args parameter|LeafSpec"
                  "|logging interval|litlogger).*")  # Lightning's advice for long runs, noise for short ones


def make_cli(args: list[str] | None, *, run: bool, quiet: bool = False,
             resume_ckpt_path: str | None = None) -> EffdlCLI:
    """``EffdlCLI`` with this project's defaults on ``args`` (``None``: ``sys.argv``). ``run=True``
    runs the subcommand in ``args``; ``run=False`` only builds trainer, model and data (the caller fits).
    ``quiet``: no progress bar and no model summary unless ``args`` asks for them."""
    trainer_defaults: dict[str, Any] = {"log_every_n_steps": 10}
    if quiet:
        trainer_defaults.update(enable_model_summary=False, enable_progress_bar=False)
    return EffdlCLI(BaseMethod, LabelBudgetDataModule, subclass_mode_model=True, subclass_mode_data=True,
                    seed_everything_default=0, trainer_defaults=trainer_defaults, args=args, run=run,
                    save_config_kwargs={"overwrite": True}, auto_configure_optimizers=False,
                    resume_ckpt_path=resume_ckpt_path)


def run_fit(config: str, overrides: list[str], run_dir: str | Path, *, test: bool = True, quiet: bool = True,
            ckpt_path: str | None = None) -> dict:
    """Train ``config`` (+ ``lit-effdl`` style ``overrides``) in this process with its logs under
    ``run_dir``, resuming from ``ckpt_path`` when given; with ``test``, test the checkpoint the config's
    ``test_checkpoint`` names. Lightning's advice warnings are off; ``quiet``: its info lines too (for this fit only).

    Returns ``{"test_acc", "tested_checkpoint", "best_model_path", "val_acc", "global_step", "log_dir"}``
    (``test_acc`` is None without ``test``; ``val_acc`` the best ``val/acc``, None without validation).
    """
    args = ["--config", str(config), *overrides, "--trainer.default_root_dir", str(run_dir)]
    levels = {name: logging.getLogger(name).level for name in LIGHTNING_LOGGERS}
    if quiet:
        for name in levels:
            logging.getLogger(name).setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=ADVICE_WARNINGS)
            cli = make_cli(args, run=False, quiet=quiet, resume_ckpt_path=ckpt_path)
            trainer = cli.trainer
            trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path, weights_only=True)
            tested = cli.checkpoint_to_test() if test else None
            tested_out = (trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=tested, verbose=not quiet,
                                       weights_only=True) if test else None)
            write_run_status(trainer, "completed")  # as `lit-effdl fit` does after its test
    finally:  # restored for callers that go on in this process
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    checkpoint = trainer.checkpoint_callback
    val = checkpoint.best_model_score if checkpoint is not None else None
    return {
        "test_acc": float(tested_out[0]["test/acc"]) if tested_out else None,
        "tested_checkpoint": tested or "",
        "best_model_path": checkpoint.best_model_path if checkpoint is not None else "",
        "val_acc": None if val is None else float(val),
        "global_step": int(trainer.global_step),
        "log_dir": trainer.log_dir,
    }


def _one_thread_worker() -> None:
    exit_with_parent()
    warnings.filterwarnings("ignore")
    tune_allocator()
    torch.set_num_threads(1)


def results_in_order(fn: Callable[..., Any], calls: list[tuple], jobs: int = 1) -> Iterator[Any]:
    """``fn(*args)`` for each args tuple, yielded in order. ``jobs > 1`` runs that many at a time in
    fresh processes with one thread each: for small networks the cores, not one fit's threads, are
    the useful parallelism. ``fn`` must be importable (a module-level function)."""
    if jobs <= 1:
        yield from (fn(*args) for args in calls)
        return
    with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"), initializer=_one_thread_worker) as pool:
        futures = [pool.submit(fn, *args) for args in calls]
        yield from (f.result() for f in futures)
