#!/usr/bin/env python
"""Search RandAugment's (N, M): short fits over a grid (or a random sample of it), best by val/acc.

    python scripts/randaugment_search.py --config configs/digits/supervised_strong.yaml --out runs/ra_search

The config's ``data.labeled_augment`` keeps its other tokens (crop, cutout...) and gets
``rand-nN-mM`` (magnitude on the 0..30 scale) in place of its RandAugment token. Writes
``results.md`` and ``results.csv`` (val/acc per pair), and ``best.yaml``: the config with the best
pair, ready for ``lit-effdl fit --config``. Extra arguments go to every fit as CLI overrides.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import random
import time
from pathlib import Path

import yaml

from lit_effdl.augment.pipelines import expand_spec, parse_token
from lit_effdl.experiment import run_fit


def spec_with(base_spec: str, n: int, m: int) -> str:
    """``base_spec`` with its RandAugment token set to ``rand-n{n}-m{m}`` (appended if absent)."""
    tokens = [t for t in expand_spec(base_spec or "none") if t != "none"]
    rand = f"rand-n{n}-m{m}"
    out = [rand if parse_token(t)[0] == "rand" else t for t in tokens]
    if rand not in out:
        out.insert(len([t for t in out if t != "cutout" and not t.startswith("cutout-")]), rand)
    return "+".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/digits/supervised_strong.yaml")
    p.add_argument("--n", type=int, nargs="+", default=[1, 2, 3], help="numbers of ops to try")
    p.add_argument("--m", type=int, nargs="+", default=[5, 10, 20], help="magnitudes (0..30) to try")
    p.add_argument("--sample", type=int, default=0, help="try this many random pairs of the grid (0: all)")
    p.add_argument("--epochs", type=int, default=10, help="trainer.max_epochs of each short fit")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/randaugment_search")
    args, overrides = p.parse_known_args()

    with open(args.config) as f:
        config = yaml.safe_load(f)
    base_spec = config["data"].get("init_args", {}).get("labeled_augment") or "none"
    pairs = list(itertools.product(args.n, args.m))
    if args.sample:
        pairs = random.Random(args.seed).sample(pairs, min(args.sample, len(pairs)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, start = [], time.time()
    for n, m in pairs:
        spec = spec_with(base_spec, n, m)
        t0 = time.time()
        r = run_fit(args.config, [f"--data.labeled_augment={spec}", f"--trainer.max_epochs={args.epochs}",
                                  f"--seed_everything={args.seed}", *overrides], out / f"n{n}_m{m}", test=False)
        rows.append({"n": n, "m": m, "spec": spec, "val_acc": round(r["val_acc"], 4),
                     "seconds": round(time.time() - t0, 1)})
        print(f"n={n} m={m:2d} val/acc {r['val_acc']:.4f} ({rows[-1]['seconds']} s)", flush=True)
    best = max(rows, key=lambda r: r["val_acc"])

    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    ns, ms = sorted({r["n"] for r in rows}), sorted({r["m"] for r in rows})
    cell = {(r["n"], r["m"]): f"{r['val_acc']:.4f}" for r in rows}
    lines = [f"RandAugment search on `{args.config}`, {args.epochs} epochs per fit, seed {args.seed}; "
             f"val/acc per (N, M), M on the 0..30 scale; {len(rows)} fits in {time.time() - start:.0f} s.",
             "", "| N \\ M | " + " | ".join(str(m) for m in ms) + " |", "|---" * (len(ms) + 1) + "|"]
    lines += [f"| {n} | " + " | ".join(cell.get((n, m), "-") for m in ms) + " |" for n in ns]
    lines += ["", f"Best: N={best['n']}, M={best['m']} (`{best['spec']}`), val/acc {best['val_acc']:.4f}."]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    config["data"].setdefault("init_args", {})["labeled_augment"] = best["spec"]
    with open(out / "best.yaml", "w") as f:
        f.write(f"# RandAugment search best: N={best['n']} M={best['m']} (val/acc {best['val_acc']:.4f})\n")
        yaml.safe_dump(config, f, sort_keys=False)
    print("\n".join(lines))
    print(f"wrote {out / 'results.md'}, {out / 'results.csv'}, {out / 'best.yaml'}")


if __name__ == "__main__":
    main()
