"""Run `lit-effdl fit` in this process and return its numbers (for the search and experiment scripts)."""

from __future__ import annotations

import torch

from lit_effdl.cli import EffdlCLI
from lit_effdl.data.datamodule import LabelBudgetDataModule
from lit_effdl.methods.base import BaseMethod


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
