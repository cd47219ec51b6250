"""Noisy Student self-training, round after round, resumable: ``scripts/noisy_student.py --config ...``.

Round 0 trains a teacher on the labels; round r >= 1 trains the config's r-th backbone as a noised
student on labeled + pseudo-labeled images, labeled by round r-1's un-noised tested checkpoint
(``test_checkpoint``: best val/acc, or the final weights).
Each round is a sub-folder of ``--out``: ``round_<r>/`` holds its TensorBoard logs and checkpoints,
``pseudo_labels.pt`` (rounds >= 1) and ``metrics.json`` (written last: a round with it is done).
A killed run started again with the same ``--out`` skips finished rounds and resumes the round it
was in from its ``last.ckpt``. ``tensorboard --logdir <out>`` shows every round.

    python scripts/noisy_student.py --config configs/digits/noisy_student.yaml --out runs/ns
    python scripts/noisy_student.py --config configs/digits/noisy_student.yaml --out runs/ns \\
        --data.init_args.num_labels_per_class 10      # any lit-effdl override after the flags

Also home of ``fit_and_test``, which the demo and the label-efficiency script share.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from pathlib import Path

import yaml

from lit_effdl.cli import EffdlCLI
from lit_effdl.data.datamodule import LabelBudgetDataModule, write_json_atomic
from lit_effdl.errors import UserError
from lit_effdl.methods.base import BaseMethod

METRICS_FILE = "metrics.json"


def fit_and_test(config: str, overrides: list[str], root_dir: str | Path, quiet: bool = True,
                 ckpt_path: str | None = None) -> dict:
    """Train ``config`` (+ ``lit-effdl`` style overrides) in this process, test the checkpoint its
    ``test_checkpoint`` names (best val/acc by default, or the final one).

    Returns ``{"test_acc", "tested_checkpoint", "best_model_path", "val_acc", "global_step"}``.
    """
    args = ["--config", config, *overrides, "--trainer.default_root_dir", str(root_dir)]
    defaults = {"log_every_n_steps": 10, "callbacks": [], "enable_model_summary": not quiet,
                "enable_progress_bar": not quiet}
    # quiet: Lightning's info lines off for this fit only (restored after, for callers in the same process)
    levels = {name: logging.getLogger(name).level for name in ("lightning.pytorch", "lightning.fabric", "lightning")}
    if quiet:
        for name in levels:
            logging.getLogger(name).setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(num_workers|does not have many workers|eval mode"
                                    "|args parameter|LeafSpec|logging interval|litlogger).*")
            cli = EffdlCLI(BaseMethod, LabelBudgetDataModule, subclass_mode_model=True, subclass_mode_data=True,
                           seed_everything_default=0, trainer_defaults=defaults, args=args, run=False,
                           save_config_kwargs={"overwrite": True}, auto_configure_optimizers=False,
                           resume_ckpt_path=ckpt_path)
            trainer = cli.trainer
            trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path)
            tested = cli.checkpoint_to_test()
            result = trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=tested, verbose=not quiet)
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    val = trainer.checkpoint_callback.best_model_score if trainer.checkpoint_callback else None
    return {
        "test_acc": float(result[0]["test/acc"]),
        "tested_checkpoint": tested or "",
        "best_model_path": best,
        "val_acc": None if val is None else float(val),
        "global_step": int(trainer.global_step),
    }


def round_backbones(config: str, overrides: list[str]) -> list[str]:
    """The ``model.init_args.backbones`` list (round 0 teacher first), overrides applied."""
    cfg = yaml.safe_load(Path(config).read_text())
    backbones = cfg.get("model", {}).get("init_args", {}).get("backbones")
    for i, arg in enumerate(overrides[:-1]):
        if arg in ("--model.init_args.backbones", "--model.backbones"):
            backbones = yaml.safe_load(overrides[i + 1])
    if not backbones or not isinstance(backbones, list):
        raise UserError(f"{config}: model.init_args.backbones must list one backbone per round (teacher first)")
    return [str(b) for b in backbones]


def run_rounds(config: str, out: str | Path, overrides: list[str] | None = None, quiet: bool = True) -> list[dict]:
    """Run (or resume) every round of ``config`` under ``out``; returns each round's metrics."""
    overrides = list(overrides or [])
    out = Path(out)
    backbones = round_backbones(config, overrides)
    results, teacher_ckpt = [], None
    for r, backbone in enumerate(backbones):
        round_dir = out / f"round_{r}"
        metrics_path = round_dir / METRICS_FILE
        if metrics_path.exists():  # finished round: never redone
            metrics = json.loads(metrics_path.read_text())
        else:
            round_args = overrides + [
                "--model.init_args.round_index", str(r),
                "--model.init_args.backbone", backbone,
                "--model.init_args.teacher_checkpoint", teacher_ckpt or "null",
                "--model.init_args.pseudo_label_file", str(round_dir / "pseudo_labels.pt") if r else "null",
            ] + (["--data.init_args.unlabeled_ratio", "0"] if r == 0 else [])  # the teacher sees labels only
            last = _last_checkpoint(round_dir)
            if not quiet:
                print(f"round {r}: {backbone}" + (f" (resuming from {last})" if last else ""), flush=True)
            metrics = fit_and_test(config, round_args, round_dir, quiet=quiet, ckpt_path=last)
            metrics.update(round=r, backbone=backbone, teacher_checkpoint=teacher_ckpt)
            write_json_atomic(metrics_path, metrics)
        results.append(metrics)
        teacher_ckpt = metrics.get("tested_checkpoint") or metrics["best_model_path"]
        if not quiet:
            print(f"round {r}: test/acc {metrics['test_acc']:.4f}", flush=True)
    return results


def _last_checkpoint(round_dir: Path) -> str | None:
    found = sorted(round_dir.glob("lightning_logs/version_*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    return str(found[-1]) if found else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="a NoisyStudent config (configs/digits/noisy_student.yaml)")
    parser.add_argument("--out", default="runs/noisy_student", help="run folder, one sub-folder per round")
    args, overrides = parser.parse_known_args(argv)
    try:
        results = run_rounds(args.config, args.out, overrides, quiet=False)
    except UserError as err:
        print(f"noisy_student: error: {err}", file=sys.stderr)
        sys.exit(2)
    for m in results:
        print(f"| round {m['round']} | {m['backbone']} | test/acc {m['test_acc']:.4f} |")
    print(f"tensorboard --logdir {args.out}")
    print(json.dumps({"rounds": results}))


if __name__ == "__main__":
    main()
