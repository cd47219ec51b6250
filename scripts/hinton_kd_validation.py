#!/usr/bin/env python
"""Choose the distilled student's recipe of ``scripts/hinton_mnist.py`` on validation, never on test.

The 784-800-800-10 student at T = 20 (``configs/mnist/distill.yaml``) from the seed-0 teacher, trained on
the training pool less 10% (6,000 images held out by ``split_seed``), scored by its validation errors
(best ``val/acc`` of the fit, out of 6,000). Each candidate (alpha, lr) runs on every split; the one with
the fewest errors summed over the splits goes into ``distill.yaml``. The test set is not read.

    python scripts/hinton_mnist.py --jobs 2      # first: the teachers
    python scripts/hinton_kd_validation.py --jobs 2

Last stdout line JSON: ``{"candidates": [{"alpha", "lr", "val_errors": {split: errors}, "total"}], "chosen": ...}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hinton_mnist import CONFIGS, fit

from lit_effdl.data import MNISTDataModule
from lit_effdl.experiment import results_in_order

VAL_FRACTION = 0.1


def one(alpha: float, lr: float, split: int, args: argparse.Namespace) -> float:
    """Best validation accuracy of one student fit (kept in its run folder, reused by a rerun)."""
    overrides = ["--seed_everything", "0", "--data.init_args.split_seed", str(split), "--data.init_args.root",
                 args.root, "--data.init_args.val_fraction", str(VAL_FRACTION), "--trainer.max_epochs",
                 str(args.epochs), "--model.init_args.teacher_checkpoint", args.teacher,
                 "--model.init_args.alpha", f"{alpha:g}", "--model.init_args.lr", f"{lr:g}"]
    record = fit(str(CONFIGS / "distill.yaml"), overrides, str(Path(args.out) / f"alpha{alpha:g}_lr{lr:g}_split{split}"),
                 test=False)
    return record["val_acc"]


def validation_images(root: str, split: int) -> int:
    dm = MNISTDataModule(root=root, val_fraction=VAL_FRACTION, split_seed=split)
    dm.setup("fit")
    return len(dm.val_dataloader().dataset)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--alphas", type=float, nargs="+", default=[0.1, 0.5])
    p.add_argument("--lrs", type=float, nargs="+", default=[0.05, 0.1])
    p.add_argument("--splits", type=int, nargs="+", default=[0, 1])
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--teacher", default="runs/hinton_mnist/teacher_seed0/lightning_logs/version_0/checkpoints/last.ckpt")
    p.add_argument("--root", default="data/mnist")
    p.add_argument("--out", default="runs/hinton_kd_validation")
    p.add_argument("--jobs", type=int, default=1, help="fits at a time, one thread each")
    args = p.parse_args()
    if not Path(args.teacher).is_file():
        print(f"hinton_kd_validation: error: teacher '{args.teacher}' not found: run scripts/hinton_mnist.py first "
              "or pass --teacher", file=sys.stderr)
        return 2
    grid = [(a, lr, s) for a in args.alphas for lr in args.lrs for s in args.splits]
    accs = dict(zip(grid, results_in_order(one, [(*g, args) for g in grid], args.jobs)))
    images = {s: validation_images(args.root, s) for s in args.splits}
    errors = {(a, lr, s): round((1.0 - acc) * images[s]) for (a, lr, s), acc in accs.items()}
    rows = []
    print(f"validation errors per split {args.splits} (out of {', '.join(map(str, images.values()))} images)")
    for a in args.alphas:
        for lr in args.lrs:
            per = {str(s): errors[a, lr, s] for s in args.splits}
            rows.append({"alpha": a, "lr": lr, "val_errors": per, "total": sum(per.values())})
            print(f"alpha {a:<4g} lr {lr:<5g} {' '.join(map(str, per.values()))}  total {rows[-1]['total']}")
    chosen = min(rows, key=lambda r: r["total"])
    print(json.dumps({"candidates": rows, "chosen": {"alpha": chosen["alpha"], "lr": chosen["lr"]}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
