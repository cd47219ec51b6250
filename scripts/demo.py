"""`make demo`: FixMatch with 5 labels per class beside supervised training on the same 50 labels.

Both train on scikit-learn's digits (embedded, offline) with the same small CNN, label split and
seed, then report test accuracy on the 359 held-out digits. A few minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from lit_effdl.experiment import run_fit

ROOT = Path(__file__).resolve().parent.parent
LABELS = ["--data.init_args.num_labels_per_class", "5"]
SUPERVISED = ROOT / "configs/digits/supervised_16px.yaml"  # the label-efficiency baseline: same images, net


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fixmatch-epochs", type=int, default=20, help="100 steps each (20: configs/digits/fixmatch.yaml)")
    p.add_argument("--supervised-epochs", type=int, default=5, help="100 steps each")
    p.add_argument("--root", default="lightning_logs/demo", help="where both runs log")
    args = p.parse_args(argv)
    print("lit-effdl demo: digits, 5 labels per class (50 labels), 1243 unlabeled images, small CNN", flush=True)
    start = time.perf_counter()
    sup = run_fit(str(SUPERVISED), LABELS + ["--trainer.max_epochs", str(args.supervised_epochs)],
                  Path(args.root) / "supervised")
    t_sup = time.perf_counter() - start
    print(f"supervised (50 labels):            test/acc {sup['test_acc']:.4f}   ({t_sup:.0f} s)", flush=True)
    fix = run_fit(str(ROOT / "configs/digits/fixmatch.yaml"),
                  LABELS + ["--trainer.max_epochs", str(args.fixmatch_epochs)], Path(args.root) / "fixmatch")
    t_fix = time.perf_counter() - start - t_sup
    print(f"FixMatch (50 labels + unlabeled):  test/acc {fix['test_acc']:.4f}   ({t_fix:.0f} s)", flush=True)
    print(f"gain from the unlabeled images: {100 * (fix['test_acc'] - sup['test_acc']):+.1f} points")
    print(f"tensorboard --logdir {args.root}")


if __name__ == "__main__":
    main()
