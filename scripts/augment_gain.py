#!/usr/bin/env python
"""Does augmentation pay off with few labels? Supervised fits with and without a pipeline, per seed.

    python scripts/augment_gain.py --config configs/digits/supervised_strong.yaml --seeds 0 1 2
    python scripts/augment_gain.py --seeds 0 1 2 --data.init_args.image_size=32   # extra CLI overrides

Each seed runs ``data.labeled_augment`` = ``--spec`` (default: the config's, strong_noflip) and
``none``; prints a table of test/acc and the mean difference, writes it to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from lit_effdl.experiment import run_fit
from lit_effdl.io import write_json_atomic


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/digits/supervised_strong.yaml")
    p.add_argument("--spec", default=None, help="augmented arm (default: the config's labeled_augment)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--root", default="lightning_logs/augment_gain")
    p.add_argument("--out", default="lightning_logs/augment_gain/result.json")
    args, overrides = p.parse_known_args()  # the rest: CLI overrides, e.g. --data.image_size=32
    arms = {"augmented": [] if args.spec is None else [f"--data.labeled_augment={args.spec}"],
            "none": ["--data.labeled_augment=none"]}
    rows = []
    out = Path(args.out)
    for seed in args.seeds:
        for arm, extra in arms.items():
            # best val/acc: the protocol of the recorded figures (docs/augment_gain.json)
            r = run_fit(args.config, [f"--seed_everything={seed}", "--test_checkpoint=best", *extra, *overrides],
                        f"{args.root}/{arm}_s{seed}")
            rows.append({"seed": seed, "arm": arm, **r})
            print(f"seed {seed} {arm:9s} val/acc {r['val_acc']:.4f} test/acc {r['test_acc']:.4f}", flush=True)
            write_json_atomic(out, {"rows": rows})
    mean = {a: statistics.mean(r["test_acc"] for r in rows if r["arm"] == a) for a in arms}
    summary = {"rows": rows, "mean_test_acc": mean,
               "gain_points": 100 * (mean["augmented"] - mean["none"])}
    write_json_atomic(out, summary)
    print(f"mean test/acc augmented {mean['augmented']:.4f} none {mean['none']:.4f} "
          f"gain {summary['gain_points']:+.1f} points")


if __name__ == "__main__":
    main()
