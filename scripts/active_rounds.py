#!/usr/bin/env python
"""Active-learning rounds, resumable: select, reveal the labels, train, select again with the model.

    python scripts/active_rounds.py --config configs/digits/fixmatch.yaml --budget 10 --rounds 3 \\
        --strategy_first typiclust --strategy_later margin --out runs/active_digits [lit-effdl overrides]

Round 0 chooses ``--budget`` images of the training pool with a cold-start strategy (``typiclust``,
``probcover``, ``kmeans_centers`` or ``random``) on embeddings of ``--embed_ckpt`` (default: pixels + PCA).
The benchmark's annotator is the hidden labels: training with ``label_selection: file`` on the chosen
images reveals exactly theirs, every other pool image stays unlabeled. Round r > 0 ranks the pool with
round r-1's tested checkpoint (``--strategy_later``: ``margin``, ``entropy``, or an embedding strategy on
its features), skipping every image already chosen, and trains afresh on all the selections so far.

Each round is ``OUT/round_<r>/``: ``selection.csv`` and ``selection.png`` (``lit-effdl select``'s),
the fit's ``lightning_logs/`` (checkpoints, ``label_split.json``) and ``result.json`` (written last,
atomically: a round with it is done). Run again with the same ``--out`` and finished rounds are read
back, an interrupted one keeps its selection and resumes its fit from ``last.ckpt``; a round done with
other settings is refused. Arguments the script does not know are ``lit-effdl fit`` overrides for every
round (``--data.*`` ones also shape the pool the strategies see). Prints one line per round; the last
stdout line is JSON ``{"rounds": [{"round", "strategy", "labeled", "classes_covered", "test_acc"}, ...]}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from lit_effdl.data.label_selection import pool_paths, read_selected
from lit_effdl.errors import UserError
from lit_effdl.experiment import run_fit
from lit_effdl.io import write_json_atomic
from lit_effdl.rounds import last_checkpoint
from lit_effdl.select import STRATEGIES
from lit_effdl.select.command import SELECTION_FILE, data_module, select

RESULT_FILE = "result.json"
COLD_START = ("typiclust", "probcover", "kmeans_centers", "random")  # need no trained model


def data_overrides(overrides: list[str]) -> list[str]:
    """The ``--data.*`` arguments of ``overrides`` (``--data.X V`` pairs or ``--data.X=V``)."""
    kept = []
    for i, arg in enumerate(overrides):
        if arg.startswith("--data."):
            has_value = "=" not in arg and i + 1 < len(overrides) and not overrides[i + 1].startswith("--")
            kept += [arg, overrides[i + 1]] if has_value else [arg]
    return kept


def train_on_files(files: list[str]) -> list[str]:
    """Fit overrides labeling exactly the images the selection files name (their union), nothing stratified."""
    return ["--data.init_args.num_labels_per_class", "null", "--data.init_args.num_labels", "null",
            "--data.init_args.label_selection", "file", "--data.init_args.label_selection_file", json.dumps(files)]


def classes_covered(dm, files: list[str]) -> tuple[int, int]:
    """(images, distinct true classes) the selection files name in ``dm``'s training pool."""
    pool = dm.sources.train
    chosen = read_selected(files, len(pool), pool_paths(pool), getattr(dm, "root", None))
    return len(chosen), int(np.unique(pool.targets[chosen]).size)


def run_round(r: int, args: argparse.Namespace, overrides: list[str], dm, earlier: list[str],
              previous_ckpt: str | None) -> dict:
    """Round ``r`` under ``OUT/round_<r>``: select (unless an interrupted run already did), fit, test."""
    round_dir = Path(args.out) / f"round_{r}"
    strategy = args.strategy_first if r == 0 else args.strategy_later
    settings = {"config": str(args.config), "budget": args.budget, "strategy": strategy, "seed": args.seed,
                "embed_ckpt": args.embed_ckpt if r == 0 else previous_ckpt, "overrides": overrides}
    done = round_dir / RESULT_FILE
    if done.is_file():
        stored = json.loads(done.read_text())
        if stored.get("settings") != settings:
            raise UserError(f"{round_dir} was run with other settings ({stored.get('settings')}): "
                            "use another --out, or delete it to redo")
        return stored
    selection = round_dir / SELECTION_FILE
    if not selection.is_file():  # an interrupted round keeps the images it chose
        select(args.config, strategy, args.budget, round_dir, ckpt_path=settings["embed_ckpt"],
               labeled=earlier or None, seed=args.seed + r, pca_dims=args.pca_dims,
               overrides=data_overrides(overrides))
    files = [*earlier, str(selection)]
    labeled, covered = classes_covered(dm, files)
    seeds = ["--seed_everything", str(args.seed), "--data.init_args.split_seed", str(args.seed)]
    fit = run_fit(args.config, [*seeds, *overrides, *train_on_files(files)], round_dir,
                  ckpt_path=last_checkpoint(round_dir))
    result = {"round": r, "strategy": strategy, "labeled": labeled, "classes_covered": covered,
              "test_acc": fit["test_acc"], "checkpoint": fit["tested_checkpoint"] or fit["best_model_path"],
              "selection": str(selection), "settings": settings}
    write_json_atomic(done, result)
    return result


def run_rounds(args: argparse.Namespace, overrides: list[str]) -> list[dict]:
    """Every round in order (finished ones read back); each round's ``result.json`` contents."""
    dm = data_module(args.config, data_overrides(overrides))
    results, earlier, ckpt = [], [], None
    for r in range(args.rounds):
        result = run_round(r, args, overrides, dm, earlier, ckpt)
        print(f"round {r}: {result['strategy']:<14} labeled {result['labeled']:>5} "
              f"({result['classes_covered']} classes)  test/acc {result['test_acc']:.4f}", flush=True)
        results.append(result)
        earlier.append(result["selection"])
        ckpt = result["checkpoint"]
        if not ckpt and r + 1 < args.rounds:
            raise UserError(f"round {r} left no checkpoint to rank the pool for round {r + 1}: keep checkpointing on")
    return results


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="a lit-effdl fit config, e.g. configs/digits/fixmatch.yaml")
    p.add_argument("--out", required=True, help="run folder, one round_<r>/ per round")
    p.add_argument("--budget", type=int, required=True, help="images chosen (labeled) per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--strategy_first", default="typiclust", choices=COLD_START, help="round 0's strategy")
    p.add_argument("--strategy_later", default="margin", choices=list(STRATEGIES), help="rounds 1.. (with the model)")
    p.add_argument("--embed_ckpt", help="round 0's embedding network (a lit-effdl checkpoint; default pixels + PCA)")
    p.add_argument("--seed", type=int, default=0, help="fits' seed and split seed; round r's strategies use seed + r")
    p.add_argument("--pca_dims", type=int, default=50, help="PCA dimensions of pixel embeddings")
    args, overrides = p.parse_known_args(argv)
    if args.rounds < 1:
        p.error(f"--rounds {args.rounds}: use 1 or more")
    return args, overrides


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse(argv)
    try:
        results = run_rounds(args, overrides)
    except UserError as err:
        print(f"active_rounds: error: {err}", file=sys.stderr)
        return 2
    keys = ("round", "strategy", "labeled", "classes_covered", "test_acc")
    print(json.dumps({"rounds": [{k: r[k] for k in keys} for r in results]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
