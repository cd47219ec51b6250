"""Cost growth: FixMatch epoch time with 1x, 2x, 4x unlabeled data, labeled set and batches fixed.

Setting of ``configs/digits/fixmatch.yaml`` on synthetic 16x16 images: ``small_cnn``, 16 labeled +
7 x 16 unlabeled per step, batched augmentation on the device, EMA, progress bar and logger on, one
thread. The labeled set (40 images) is cycled; an epoch is one pass over the unlabeled set, so it
has 1x, 2x, 4x the steps. The epoch itself is timed (a callback), data generation is not.
Rounds run 1x, 2x, 4x, 1x, 2x, 4x... so machine load hits all sizes alike; per-size medians.
``growth_exponent`` = least-squares slope of log(epoch time) vs log(unlabeled size): 1.0 is linear.
"""

from __future__ import annotations

import math
import statistics

import lightning as L
import torch

from benchmarks._fit import EpochTimer, user_trainer
from benchmarks._timing import print_table

LABELS, BATCH, MU = 40, 16, 7


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log(ys) against log(xs)."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def epoch_time(num_unlabeled: int) -> float:
    from lit_effdl.data import SyntheticDataModule
    from lit_effdl.methods import FixMatch

    dm = SyntheticDataModule(num_classes=10, image_size=16, channels=3, num_train=LABELS + num_unlabeled,
                             num_test=64, num_labels=LABELS, val_fraction=0.0, batch_size=BATCH,
                             unlabeled_ratio=MU, num_workers=0, labeled_augment="weak",
                             unlabeled_weak_augment="weak", unlabeled_strong_augment="strong",
                             augment_on="device")
    dm.setup("fit")
    L.seed_everything(0, verbose=False)
    model = FixMatch(backbone="small_cnn", num_classes=10)
    timer = EpochTimer()
    user_trainer(max_epochs=1, callbacks=[timer]).fit(model, datamodule=dm)
    return timer.epochs[0]


def run(args) -> dict:
    torch.set_num_threads(1)
    quick = getattr(args, "quick", False)
    repeats = getattr(args, "repeats", None) or (1 if quick else 3)
    base = BATCH * MU * (2 if quick else 8)  # unlabeled images at 1x: 8 steps
    sizes = [base, 2 * base, 4 * base]
    epoch_time(base // 2)  # warm-up
    times: dict[int, list[float]] = {n: [] for n in sizes}
    for _ in range(repeats):
        for n in sizes:
            times[n].append(epoch_time(n))
    med = {n: statistics.median(v) for n, v in times.items()}
    exponent = slope(sizes, [med[n] for n in sizes])
    result = {
        "growth_exponent": round(exponent, 4),
        "unlabeled_sizes": sizes, "epoch_s": [round(med[n], 3) for n in sizes],
        "steps": [n // (BATCH * MU) for n in sizes], "labeled": LABELS, "batch": BATCH, "mu": MU,
        "backbone": "small_cnn", "threads": 1, "repeats": repeats,
    }
    rows = [(f"{n} unlabeled ({n // (BATCH * MU)} steps)", f"{med[n]:8.3f} s") for n in sizes]
    rows.append(("growth_exponent", f"{exponent:8.4f}  (target <= 1.05)"))
    print_table("FixMatch epoch time vs unlabeled size (small_cnn, 16x16, device augmentation, 1 thread)", rows)
    return result
