"""One FixMatch training step vs its floor: a plain forward + backward on the same concatenated batch.

Setting of ``configs/digits/fixmatch.yaml``: ``small_cnn``, 16x16 RGB, 16 labeled + 7 x 16 weak +
7 x 16 strong images per step (240 through the backbone), one thread. Augmentation is excluded
from both sides: the batches are made once and replayed (a DataLoader with ``batch_size=None``).
(a) ``FixMatch`` through ``Trainer.fit`` as users run it (progress bar, logger, EMA 0.999, SGD +
cosine schedule, its five logged metrics); (b) the floor: normalise, forward of the concatenated
batch, cross-entropy, backward, nothing else. Blocks of steps alternate a, b, a, b...; the first
steps of each block are untimed. ``fixmatch_vs_floor`` = median (a) step wall time / median (b); ``cpu_time_ratio`` the same with
process CPU time (steadier when other jobs share the cores).
"""

from __future__ import annotations

import time

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from benchmarks._fit import EpochTimer, user_trainer
from benchmarks._timing import alternating, print_table, ratios

SIZE, BATCH, MU, CLASSES = 16, 16, 7, 10


def make_batches(count: int) -> list[dict]:
    gen = torch.Generator().manual_seed(0)

    def images(n: int) -> torch.Tensor:
        return torch.randint(0, 256, (n, 3, SIZE, SIZE), dtype=torch.uint8, generator=gen)

    batches = []
    for _ in range(count):
        n = BATCH * MU
        batches.append({
            "labeled": {"image": images(BATCH), "target": torch.randint(0, CLASSES, (BATCH,), generator=gen),
                        "index": torch.arange(BATCH)},
            "unlabeled": {"weak": images(n), "strong": images(n), "index": torch.arange(n),
                          "hidden_target": torch.randint(0, CLASSES, (n,), generator=gen)},
        })
    return batches


def _model():
    from lit_effdl.methods import FixMatch

    L.seed_everything(0, verbose=False)
    return FixMatch(backbone="small_cnn", num_classes=CLASSES, threshold=0.5)


def lit_steps(batches: list[dict], skip: int) -> tuple[float, float]:
    """(wall, CPU) seconds per FixMatch step through ``Trainer.fit`` (after ``skip`` untimed steps)."""
    timer = EpochTimer(skip_batches=skip)
    trainer = user_trainer(max_steps=len(batches), callbacks=[timer])
    trainer.fit(_model(), train_dataloaders=DataLoader(batches, batch_size=None, shuffle=False))
    n = len(batches) - skip
    return timer.after_skip[0] / n, timer.after_skip_cpu[0] / n


def floor_steps(batches: list[dict], skip: int) -> tuple[float, float]:
    """(wall, CPU) seconds per plain forward + backward of the concatenated batch (after ``skip``)."""
    model = _model()
    net, mean, std = model.backbone, model.input_mean, model.input_std
    net.train()
    start, start_cpu = time.perf_counter(), time.process_time()
    for i, batch in enumerate(batches):
        if i == skip:
            start, start_cpu = time.perf_counter(), time.process_time()
        lab, unl = batch["labeled"], batch["unlabeled"]
        images = torch.cat([lab["image"], unl["weak"], unl["strong"]])
        targets = torch.cat([lab["target"], unl["hidden_target"], unl["hidden_target"]])
        x = (images.float().div_(255.0) - mean) / std
        net.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), targets).backward()
    n = len(batches) - skip
    return (time.perf_counter() - start) / n, (time.process_time() - start_cpu) / n


def run(args) -> dict:
    torch.set_num_threads(1)
    quick = getattr(args, "quick", False)
    repeats = getattr(args, "repeats", None) or (2 if quick else 7)
    steps, skip = (6, 2) if quick else (14, 3)
    batches = make_batches(steps)
    lit_steps(batches[:4], 1), floor_steps(batches[:4], 1)  # warm-up
    times, med, med_cpu = alternating({"fixmatch": lambda: lit_steps(batches, skip),
                                       "floor": lambda: floor_steps(batches, skip)}, repeats)
    ratio, cpu_ratio, paired = ratios(times, med, med_cpu, "fixmatch", "floor")
    result = {
        "fixmatch_vs_floor": ratio, "cpu_time_ratio": cpu_ratio, "paired_ratio_median": paired,
        "fixmatch_step_ms": round(1000 * med["fixmatch"], 2), "floor_step_ms": round(1000 * med["floor"], 2),
        "images_per_step": BATCH * (1 + 2 * MU), "image_size": SIZE, "backbone": "small_cnn",
        "timed_steps_per_block": steps - skip, "threads": 1, "repeats": repeats,
    }
    print_table(f"FixMatch step vs floor ({BATCH} + {MU}x{BATCH} weak + {MU}x{BATCH} strong, "
                f"{SIZE}x{SIZE}, small_cnn, 1 thread)", [
        ("FixMatch step (Trainer.fit)", f"{1000 * med['fixmatch']:8.1f} ms"),
        ("floor: forward + backward", f"{1000 * med['floor']:8.1f} ms"),
        ("fixmatch_vs_floor", f"{result['fixmatch_vs_floor']:8.4f}  (target <= 1.15)"),
        ("cpu_time_ratio", f"{result['cpu_time_ratio']:8.4f}"),
    ])
    return result
