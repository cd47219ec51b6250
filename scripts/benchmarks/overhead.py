"""Framework overhead: one epoch of ``Supervised`` through ``Trainer.fit`` vs a hand-written loop.

Both sides, in one process, one thread: the same ``small_cnn`` (same seed), the same data module's
train loader (synthetic 32x32 images, no augmentation: this measures the framework, not the
data), SGD with Nesterov momentum and the same named parameter groups, and the per-step warm-up +
cosine LR schedule. The Lightning side runs as users run it: Rich progress bar, TensorBoard
logger, checkpoint callback, model summary; validation is off on both sides. The whole
``Trainer.fit`` call is timed (set-up, summary and the end-of-epoch checkpoint included).
Rounds alternate lit-effdl, plain, lit-effdl, plain... so machine load hits both alike.
``overhead_ratio`` = median lit-effdl wall time / median plain wall time; ``cpu_time_ratio`` is
the same with process CPU time, the steadier figure when other jobs share the cores.
"""

from __future__ import annotations

import os
import statistics

import lightning as L
import torch
import torch.nn.functional as F

from benchmarks._fit import EpochTimer, timed, user_trainer
from benchmarks._timing import print_table


def _data(num_train: int, batch_size: int):
    from lit_effdl.data import SyntheticDataModule

    dm = SyntheticDataModule(num_classes=10, image_size=32, channels=3, num_train=num_train, num_test=64,
                             val_fraction=0.0, batch_size=batch_size, labeled_augment="none", num_workers=0)
    dm.setup("fit")
    return dm


def _model():
    from lit_effdl.methods import Supervised

    L.seed_everything(0, verbose=False)
    return Supervised(backbone="small_cnn", num_classes=10, lr=0.03, warmup_epochs=0.1)


def lit_epoch(dm) -> tuple[float, float, float]:
    """(whole ``Trainer.fit`` wall time, its CPU time, epoch-only wall time) of one epoch."""
    timer = EpochTimer()

    def fit() -> None:
        user_trainer(max_epochs=1, callbacks=[timer]).fit(_model(), datamodule=dm)

    wall, cpu = timed(fit)
    return wall, cpu, timer.epochs[0]


def plain_epoch(dm) -> None:
    """The same epoch, hand-written: prepare, forward, CE, backward, SGD step, LR step."""
    from lit_effdl.methods.base import warmup_cosine

    model = _model()
    net, hp = model.backbone, model.hparams
    net.train()
    optimizer = torch.optim.SGD(model.param_groups(), lr=hp.lr, momentum=hp.momentum, nesterov=hp.nesterov)
    loader = dm.train_dataloader()
    total = len(loader)
    warmup = int(round(hp.warmup_epochs * total))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, total, warmup, 0.0))
    mean, std = model.input_mean, model.input_std
    for batch in loader:
        x = (batch["image"].float().div_(255.0) - mean) / std
        loss = F.cross_entropy(net(x), batch["target"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()


def run(args) -> dict:
    torch.set_num_threads(1)
    os.environ.setdefault("COLUMNS", "120")
    quick = getattr(args, "quick", False)
    repeats = getattr(args, "repeats", None) or (2 if quick else 5)
    num_train, batch_size = (1024, 64) if quick else (3200, 64)
    dm = _data(num_train, batch_size)
    lit_epoch(dm), plain_epoch(dm)  # warm-up: imports, allocator, first-call paths
    lit, lit_cpu, lit_only, plain, plain_cpu = [], [], [], [], []
    for _ in range(repeats):
        whole, cpu, epoch = lit_epoch(dm)
        lit.append(whole)
        lit_cpu.append(cpu)
        lit_only.append(epoch)
        wall, cpu = timed(lambda: plain_epoch(dm))
        plain.append(wall)
        plain_cpu.append(cpu)
    med_lit, med_plain, med_epoch = statistics.median(lit), statistics.median(plain), statistics.median(lit_only)
    steps = num_train // batch_size
    result = {
        "overhead_ratio": round(med_lit / med_plain, 4),
        "cpu_time_ratio": round(statistics.median(lit_cpu) / statistics.median(plain_cpu), 4),
        "epoch_only_ratio": round(med_epoch / med_plain, 4),
        "paired_ratio_median": round(statistics.median(a / b for a, b in zip(lit, plain)), 4),
        "lit_fit_s": round(med_lit, 3), "lit_epoch_s": round(med_epoch, 3), "plain_s": round(med_plain, 3),
        "lit_cpu_s": round(statistics.median(lit_cpu), 3), "plain_cpu_s": round(statistics.median(plain_cpu), 3),
        "steps": steps, "batch_size": batch_size, "backbone": "small_cnn", "threads": 1, "repeats": repeats,
    }
    print_table(f"framework overhead: one epoch, {steps} steps of {batch_size} (small_cnn, 32x32, 1 thread)", [
        ("Trainer.fit (whole call)", f"{med_lit:8.3f} s"),
        ("  of which the epoch", f"{med_epoch:8.3f} s"),
        ("hand-written loop", f"{med_plain:8.3f} s"),
        ("overhead_ratio", f"{result['overhead_ratio']:8.4f}  (target <= 1.05)"),
        ("cpu_time_ratio", f"{result['cpu_time_ratio']:8.4f}"),
    ])
    return result
