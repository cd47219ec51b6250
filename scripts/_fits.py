"""Run `lit-effdl fit` in this process and return its numbers (for the search and experiment scripts)."""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import sys
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch

from lit_effdl.cli import EffdlCLI
from lit_effdl.data.datamodule import LabelBudgetDataModule
from lit_effdl.methods.base import BaseMethod
from lit_effdl.runtime import tune_allocator


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _exit_with_parent() -> None:
    """Linux: SIGKILL this worker when the script that started it dies, so a killed script leaves
    no orphan fits burning the cores (Python's process pool only notices between tasks). Not SIGTERM:
    Lightning's handler turns it into a failed task, and such a worker was seen waiting on forever."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        parent = mp.parent_process()
        if parent is not None and os.getppid() != parent.pid:  # the parent died before the call above
            os._exit(1)


def _one_thread_worker() -> None:
    _exit_with_parent()
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


def fit_once(config: str, overrides: list[str], root: str, test: bool = False) -> dict[str, float]:
    """One fit with the CLI's parser and defaults (as ``lit-effdl fit``); best val/acc, test/acc."""
    args = ["--config", config, *overrides, "--trainer.default_root_dir", root,
            "--trainer.enable_model_summary", "false", "--trainer.enable_progress_bar", "false"]
    cli = EffdlCLI(
        BaseMethod, LabelBudgetDataModule, subclass_mode_model=True, subclass_mode_data=True,
        seed_everything_default=0, trainer_defaults={"log_every_n_steps": 10},
        save_config_kwargs={"overwrite": True}, args=args, run=False, auto_configure_optimizers=False,
    )
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    best = cli.trainer.checkpoint_callback.best_model_score
    result = {"val_acc": float(best) if best is not None else float("nan"),
              "log_dir": cli.trainer.log_dir}
    if test:
        out = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="best", verbose=False)
        result["test_acc"] = float(out[0]["test/acc"])
    del cli
    return result
