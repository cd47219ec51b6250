#!/usr/bin/env python
"""Which images to label: test accuracy of a method trained on class-blind selections, per budget.

    make data && python scripts/selection_demo.py --dataset mnist --budgets 10,20,40 \\
        --strategies random,typiclust,probcover --method fixmatch --seeds 0,1,2 --jobs 2
    python scripts/selection_demo.py --quick            (smoke run: digits, budget 10, seed 0, 2 steps a fit)

For each (budget, strategy, seed) ``lit-effdl select`` chooses ``budget`` images of the training pool
blind to class (the ``--embed_ckpt`` backbone's features, e.g. SimCLR's, or pixels + PCA; the
strategy's k-means / random draw seeded by the seed), then
the method's config (``configs/<dataset>/<method>.yaml``) trains on exactly those labels
(``label_selection: file``), every other pool image unlabeled, and its final weights are tested.

Schedule: the config's with ``--trainer.max_epochs`` set to ``--epochs`` (default 5): for the FixMatch
configs 5 x 100 steps of 16 labeled + 7 x 16 unlabeled (weak + strong) images, a quarter of their
20 epochs, sized for 2 CPU cores; ``--seed_everything`` and ``split_seed`` (the validation carve) are the seed.

Prints each fit as it finishes, then a table of test accuracy (mean +- std over seeds) and the mean
number of classes the selection covers, per (budget, strategy); writes ``OUT/selection_demo.png``
(accuracy against budget, one line per strategy) and ``OUT/results.json``. Each fit is
``OUT/<strategy>/b<budget>_seed<seed>/`` with its ``selection.csv`` and ``result.json``: a rerun reuses
every finished fit whose settings (config, overrides, selection file) are unchanged. The last stdout
line is JSON ``{"results": [{"strategy", "budget", "seed", "classes_covered", "test_acc"}, ...]}``.
``--selection_only`` stops after selecting: classes covered per (budget, strategy), ``OUT/coverage.json``.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path

from active_rounds import classes_covered, train_on_files  # the rounds driver's helpers
from hinton_mnist import QUICK, run_named  # resumable fits (result.json per fit), jobs at a time
from label_efficiency import config_path, plot

from lit_effdl.errors import UserError
from lit_effdl.io import write_json_atomic
from lit_effdl.rounds import is_rounds_config
from lit_effdl.select import STRATEGIES
from lit_effdl.select.command import CONTACT_SHEET, SELECTION_FILE, data_module, select

DATASETS = ("digits", "mnist")


def select_once(config: str, strategy: str, budget: int, seed: int, run_dir: Path, overrides: list[str],
                embed_ckpt: str | None = None, whiten_dims: int | None = None) -> str:
    """``run_dir/selection.csv``, rewritten only when the choice changed (its file time keys the fit)."""
    fresh = run_dir / "selecting"
    select(config, strategy, budget, fresh, ckpt_path=embed_ckpt, seed=seed, overrides=overrides,
           whiten_dims=whiten_dims)
    target = run_dir / SELECTION_FILE
    if not target.is_file() or not filecmp.cmp(fresh / SELECTION_FILE, target, shallow=False):
        for name in (CONTACT_SHEET, SELECTION_FILE):  # the csv last: it marks the selection complete
            os.replace(fresh / name, run_dir / name)
    shutil.rmtree(fresh)
    return str(target)


def summarise(rows: list[dict]) -> list[dict]:
    """Per (budget, strategy): mean and population std of test accuracy, mean classes covered, n."""
    groups: dict[tuple[int, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["budget"], r["strategy"]), []).append(r)
    return [{"budget": b, "strategy": s, "mean": statistics.mean(r["test_acc"] for r in g),
             "std": statistics.pstdev([r["test_acc"] for r in g]) if len(g) > 1 else 0.0,
             "classes_covered": statistics.mean(r["classes_covered"] for r in g), "n": len(g)}
            for (b, s), g in sorted(groups.items())]


def table(summary: list[dict], strategies: list[str], budgets: list[int], num_classes: int) -> str:
    """Markdown: one row per strategy, one column per budget: accuracy mean +- std (classes covered)."""
    cell = {(s["strategy"], s["budget"]): s for s in summary}
    lines = ["| strategy | " + " | ".join(f"{b} labels" for b in budgets) + " |", "|---" * (len(budgets) + 1) + "|"]
    for strategy in strategies:
        values = [f"{c['mean']:.3f} ± {c['std']:.3f} ({c['classes_covered']:.1f}/{num_classes} classes)"
                  for c in (cell[(strategy, b)] for b in budgets)]
        lines.append(f"| {strategy} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def coverage_only(rows: list[dict], args: argparse.Namespace, seconds: float) -> int:
    """``--selection_only``: the mean number of classes each (strategy, budget) covers; no fit."""
    print(f"{args.dataset}: classes covered, mean over seeds {args.seeds} ({args.embed_ckpt or 'pixels + PCA'})")
    print("| strategy | " + " | ".join(f"{b} labels" for b in args.budgets) + " |")
    print("|---" * (len(args.budgets) + 1) + "|")
    for strategy in args.strategies:
        means = [statistics.mean(r["classes_covered"] for r in rows if r["strategy"] == strategy and r["budget"] == b)
                 for b in args.budgets]
        print(f"| {strategy} | " + " | ".join(f"{m:.1f}" for m in means) + " |")
    write_json_atomic(args.out / "coverage.json", {"results": rows, "embedding": args.embed_ckpt or "pixels+pca",
                                                   "whiten_dims": args.whiten_dims,
                                                   "seconds": round(seconds)})
    print(json.dumps({"results": rows}))
    return 0


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=DATASETS, default="mnist")
    p.add_argument("--budgets", default="10,20,40", help="labeled images per fit, comma-separated")
    p.add_argument("--strategies", default="random,typiclust,probcover")
    p.add_argument("--method", default="fixmatch", help="configs/<dataset>/<method>.yaml")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--embed_ckpt", help="checkpoint whose backbone embeds the pool (e.g. a SimCLR run's "
                   "last.ckpt); default: pixels + PCA")
    p.add_argument("--extra", default="", help="lit-effdl overrides for every fit, e.g. "
                   "'--model.init_args.checkpoint_path run/last.ckpt' for --method simclr_finetune")
    p.add_argument("--whiten_dims", type=int, help="PCA-whiten the embeddings to this many dimensions first")
    p.add_argument("--epochs", type=int, default=5, help="trainer.max_epochs of every fit (100 steps each)")
    p.add_argument("--root", default="data/mnist", help="MNIST folder (make data)")
    p.add_argument("--jobs", type=int, default=1, help="fits at a time, one thread each (2 on 2 cores)")
    p.add_argument("--out", help="default runs/selection_demo/<dataset>")
    p.add_argument("--selection_only", action="store_true",
                   help="select and count the classes each choice covers (OUT/coverage.json); train nothing")
    p.add_argument("--quick", action="store_true", help="smoke run: digits, budget 10, seed 0, 2 steps per fit")
    args = p.parse_args(argv)
    if args.quick:
        args.dataset, args.budgets, args.seeds, args.epochs = "digits", "10", "0", 1
    try:
        args.budgets = [int(b) for b in args.budgets.split(",")]
        args.seeds = [int(s) for s in args.seeds.split(",")]
        if min(args.budgets) < 1 or args.epochs < 1:
            raise ValueError
    except ValueError:
        p.error("--budgets / --seeds / --epochs: use positive integers, comma-separated")
    args.strategies = [s for s in args.strategies.split(",") if s]
    unknown = [s for s in args.strategies if s not in STRATEGIES or STRATEGIES[s][1] == "probabilities"]
    if unknown or not args.strategies:
        p.error(f"--strategies {','.join(unknown)}: use cold-start ones (no model yet): "
                + ", ".join(s for s, (_, kind) in STRATEGIES.items() if kind != "probabilities"))
    args.out = Path(args.out or Path("runs") / "selection_demo" / args.dataset)
    return args


def main(argv: list[str] | None = None) -> int:
    args, start = parse(argv), time.time()
    try:
        config = str(config_path(args.dataset, args.method))
        if is_rounds_config(config):
            raise UserError(f"--method {args.method}: {config} is a rounds recipe; this demo trains one fit per "
                            "selection: use a single-fit method (fixmatch, pseudo_label, supervised)")
        data = ["--data.init_args.root", args.root] if args.dataset == "mnist" else []
        dm = data_module(config, data)
        pool, n_test = len(dm.sources.train), len(dm.sources.test)  # a missing MNIST file: one message
        schedule = ["--trainer.max_epochs", str(args.epochs), *(QUICK if args.quick else [])]
        calls, rows = {}, []
        for budget in args.budgets:
            for strategy in args.strategies:
                for seed in args.seeds:
                    run_dir = args.out / strategy / f"b{budget}_seed{seed}"
                    selection = select_once(config, strategy, budget, seed, run_dir, data, args.embed_ckpt,
                                            args.whiten_dims)
                    _, covered = classes_covered(dm, [selection])
                    overrides = ["--seed_everything", str(seed), "--data.init_args.split_seed", str(seed), *data,
                                 *schedule, "--test_checkpoint", "last", *train_on_files([selection]),
                                 *shlex.split(args.extra)]
                    calls[f"{strategy}_b{budget}_s{seed}"] = (config, overrides, str(run_dir))
                    rows.append({"strategy": strategy, "budget": budget, "seed": seed, "classes_covered": covered})
        if args.selection_only:
            return coverage_only(rows, args, time.time() - start)
        print(f"{args.dataset} ({pool} pool images, {n_test} test), {args.method}: {len(calls)} fits of "
              f"{args.epochs} epochs, {args.jobs} job(s)", flush=True)
        fits = run_named(calls, args.jobs, lambda acc: round((1.0 - acc) * n_test), start)
    except UserError as err:
        print(f"selection_demo: error: {err}", file=sys.stderr)
        return 2
    for row, fit in zip(rows, fits.values()):
        row["test_acc"] = fit["test_acc"]
    summary = summarise(rows)
    print(f"\n{args.dataset} test accuracy, {args.method}, mean ± std over seeds {args.seeds} (classes covered)")
    print(table(summary, args.strategies, args.budgets, dm.num_classes))
    args.out.mkdir(parents=True, exist_ok=True)
    plot([{**s, "method": s["strategy"], "labels_per_class": s["budget"]} for s in summary], args.strategies,
         args.out / "selection_demo.png", args.dataset, xlabel="labeled images (class-blind selection)",
         title=f"{args.method}, accuracy vs budget")
    write_json_atomic(args.out / "results.json", {"results": rows, "summary": summary, "epochs": args.epochs,
                                                  "embedding": args.embed_ckpt or "pixels+pca",
                                                  "whiten_dims": args.whiten_dims,
                                                  "method": args.method, "extra": args.extra,
                                                  "seconds": round(time.time() - start)})
    print(json.dumps({"results": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
