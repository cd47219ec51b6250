"""Self-training rounds, resumable: ``lit-effdl rounds --config RECIPE --out DIR [overrides]``.

A rounds recipe is a YAML file with a ``rounds`` list; each round is one ``lit-effdl fit`` of a
LightningCLI config plus arguments::

    config: noisy_student_student.yaml        # every round's config (a path relative to the recipe)
    rounds:
      - args: [--model, lit_effdl.methods.Supervised, --model.init_args.backbone, small_cnn]  # round 0
      - args: [--model.init_args.backbone, small_cnn_w48]
      - config: other.yaml                    # a round may name its own config
        args: [--model.init_args.backbone, small_cnn_w64]

Round 0, the first teacher, trains on the labels only (``data.init_args.unlabeled_ratio 0``). Every
later round gets ``model.init_args.teacher_checkpoint`` (the previous round's tested checkpoint, the
one ``test_checkpoint`` names) and ``model.init_args.pseudo_label_file`` (``round_<r>/pseudo_labels.pt``).
The command line's overrides apply to every round, after the recipe's arguments.

Each round is a sub-folder of ``--out``: ``round_<r>/`` holds its TensorBoard logs, checkpoints,
pseudo-labels and ``metrics.json`` (written last: a round with it is done). Run again with the same
``--out``, finished rounds are skipped and the interrupted one resumes from its ``last.ckpt``.
``tensorboard --logdir DIR`` shows every round.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml
from lightning.pytorch.utilities import rank_zero_info

from lit_effdl.errors import UserError
from lit_effdl.experiment import run_fit
from lit_effdl.io import write_json_atomic

METRICS_FILE = "metrics.json"
PSEUDO_LABEL_FILE = "pseudo_labels.pt"


def _read_yaml(path: str | Path) -> object:
    try:
        return yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise UserError(f"cannot read {path}: {err}") from err


def is_rounds_config(path: str | Path) -> bool:
    """True when ``path`` is a rounds recipe (a YAML mapping with a ``rounds`` key)."""
    path = Path(path)
    if not path.is_file():
        return False
    recipe = _read_yaml(path)
    return isinstance(recipe, dict) and "rounds" in recipe


def _arg(value: object) -> str:
    """A YAML scalar as the command line would spell it."""
    if isinstance(value, bool):
        return str(value).lower()
    return "null" if value is None else str(value)


def load_recipe(path: str | Path) -> list[tuple[Path, list[str]]]:
    """``(config, args)`` of each round of the recipe at ``path``, configs resolved and checked."""
    path = Path(path)
    recipe = _read_yaml(path)
    rounds = recipe.get("rounds") if isinstance(recipe, dict) else None
    if not isinstance(rounds, list) or not rounds:
        raise UserError(f"{path}: 'rounds' must list the rounds (teacher first), each {{config, args}}")
    plan = []
    for r, entry in enumerate(rounds):
        entry = entry or {}
        unknown = set(entry) - {"config", "args"} if isinstance(entry, dict) else {"(not a mapping)"}
        if unknown:
            raise UserError(f"{path}: round {r} has {sorted(unknown)}: a round takes 'config' and 'args'")
        config = entry.get("config", recipe.get("config"))
        if not config:
            raise UserError(f"{path}: round {r} names no config: set 'config' at the top or in the round")
        config = path.parent / config
        if not config.is_file():
            raise UserError(f"{path}: round {r}'s config {config} is not a file")
        args = entry.get("args") or []
        if not isinstance(args, list):
            raise UserError(f"{path}: round {r}'s args must be a list like [--model.init_args.backbone, small_cnn]")
        plan.append((config, [_arg(a) for a in args]))
    return plan


def config_files(path: str | Path) -> list[Path]:
    """The recipe and every config it names (what decides the rounds' settings)."""
    return [Path(path), *dict.fromkeys(config for config, _ in load_recipe(path))]


def round_args(r: int, round_dir: Path, teacher_checkpoint: str | None) -> list[str]:
    """What the driver adds to round ``r``: labels only for the first teacher, a teacher after."""
    if r == 0:
        return ["--data.init_args.unlabeled_ratio", "0"]
    return ["--model.init_args.teacher_checkpoint", teacher_checkpoint,
            "--model.init_args.pseudo_label_file", str(round_dir / PSEUDO_LABEL_FILE)]


def run_rounds(config: str | Path, out: str | Path, overrides: list[str] | None = None,
               quiet: bool = True) -> list[dict]:
    """Run (or resume) every round of the recipe ``config`` under ``out``; each round's metrics
    (``run_fit``'s, plus ``round``, ``config``, ``args``, ``teacher_checkpoint``), the last one the result."""
    plan, out = load_recipe(config), Path(out)
    results, teacher = [], None
    for r, (round_config, recipe_args) in enumerate(plan):
        round_dir = out / f"round_{r}"
        metrics_path = round_dir / METRICS_FILE
        if metrics_path.exists():  # a finished round is never redone
            metrics = json.loads(metrics_path.read_text())
        else:
            last = last_checkpoint(round_dir)
            if not quiet:
                rank_zero_info(f"round {r}: {round_config} {' '.join(recipe_args)}"
                               + (f" (resuming from {last})" if last else ""))
            args = [*recipe_args, *(overrides or []), *round_args(r, round_dir, teacher)]
            metrics = run_fit(str(round_config), args, round_dir, quiet=quiet, ckpt_path=last)
            metrics.update(round=r, config=str(round_config), args=recipe_args, teacher_checkpoint=teacher)
            write_json_atomic(metrics_path, metrics)
        results.append(metrics)
        teacher = metrics.get("tested_checkpoint") or metrics["best_model_path"]
        if not teacher and r + 1 < len(plan):
            raise UserError(f"round {r} left no checkpoint to teach round {r + 1}: keep checkpointing on")
        if not quiet:
            rank_zero_info(f"round {r}: test/acc {metrics['test_acc']:.4f}")
    return results


def last_checkpoint(round_dir: Path) -> str | None:
    """The newest ``last.ckpt`` of an interrupted round, None for a fresh one."""
    found = sorted(round_dir.glob("lightning_logs/version_*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    return str(found[-1]) if found else None


def main(argv: list[str] | None = None) -> None:
    """``lit-effdl rounds``: run the recipe, print one table row per round and, last, the JSON results."""
    parser = argparse.ArgumentParser(prog="lit-effdl rounds", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="a rounds recipe, e.g. configs/digits/noisy_student.yaml")
    parser.add_argument("--out", help="run folder, one sub-folder per round (default: runs/<recipe name>)")
    args, overrides = parser.parse_known_args(argv)
    out = args.out or str(Path("runs") / Path(args.config).stem)
    try:
        if not is_rounds_config(args.config):
            raise UserError(f"{args.config} is not a rounds recipe (no 'rounds' key): `lit-effdl fit` trains a config")
        results = run_rounds(args.config, out, overrides, quiet=False)
    except UserError as err:
        print(f"lit-effdl rounds: error: {err}", file=sys.stderr)
        sys.exit(2)
    # the command's output (stdout, every rank alike: the driver runs in one process)
    for m in results:
        print(f"| round {m['round']} | {Path(m['config']).name} {' '.join(m['args'])} | test/acc {m['test_acc']:.4f} |")
    print(f"tensorboard --logdir {out}")
    print(json.dumps({"rounds": results}))
