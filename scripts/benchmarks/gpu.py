"""GPU benchmark (``scripts/bench_gpu.sh`` runs it): lit-effdl vs a plain loop, and augment_on.

(1) ResNet-50, 224x224 synthetic uint8 batches, bf16-mixed + channels_last, SGD + Nesterov:
    train images/s of ``Supervised`` through ``Trainer.fit`` (progress bar + logger on) and of a
    hand-written loop with the same settings, both in this process, blocks alternating lit, plain,
    lit, plain. The batches are made once in pinned host memory and replayed, so the loader is
    the same trivial one on both sides. ``gpu_overhead_ratio`` = plain images/s / lit images/s.
(2) WRN-28-2 FixMatch (64 labeled + 7 x 64 unlabeled, 32x32 synthetic, bf16-mixed) steps/s with
    ``augment_on: loader`` (per-image views in DataLoader workers) vs ``device`` (batched on GPU).
Without CUDA it returns ``{"skipped": true, ...}`` at once. Sized to finish well under 8 minutes.
"""

from __future__ import annotations

import os
import statistics
import time

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from benchmarks._fit import EpochTimer, user_trainer
from benchmarks._timing import print_table

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class ReplayBatches(Dataset):
    """``length`` items cycling over a few pre-made (pinned) batches: a loader that costs nothing."""

    def __init__(self, batches: list[dict], length: int):
        self.batches, self.length = batches, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        return self.batches[i % len(self.batches)]


def _resnet_batches(batch_size: int, count: int = 4) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    return [{"image": torch.randint(0, 256, (batch_size, 3, 224, 224), dtype=torch.uint8, generator=gen).pin_memory(),
             "target": torch.randint(0, 1000, (batch_size,), generator=gen).pin_memory(),
             "index": torch.arange(batch_size)} for _ in range(count)]


def _resnet_model():
    from lit_effdl.methods import Supervised

    L.seed_everything(0, verbose=False)
    return Supervised(backbone="resnet50", num_classes=1000, channels_last=True, lr=0.1,
                      input_mean=IMAGENET_MEAN, input_std=IMAGENET_STD)


def lit_resnet(batches: list[dict], warmup: int, steps: int) -> float:
    """Images/s of ``Supervised`` ResNet-50 through ``Trainer.fit`` (bf16-mixed, channels_last)."""
    timer = EpochTimer(skip_batches=warmup)
    trainer = user_trainer(max_steps=warmup + steps, callbacks=[timer], accelerator="gpu", precision="bf16-mixed")
    loader = DataLoader(ReplayBatches(batches, warmup + steps), batch_size=None)
    trainer.fit(_resnet_model(), train_dataloaders=loader)
    return steps * batches[0]["image"].shape[0] / timer.after_skip[0]


def plain_resnet(batches: list[dict], warmup: int, steps: int) -> float:
    """Images/s of the same training, hand-written: autocast bf16, channels_last, SGD, LR schedule."""
    from lit_effdl.methods.base import warmup_cosine

    device = torch.device("cuda")
    model = _resnet_model().to(device)
    net, hp = model.backbone, model.hparams
    net.train()
    optimizer = torch.optim.SGD(model.param_groups(), lr=hp.lr, momentum=hp.momentum, nesterov=hp.nesterov)
    total = warmup + steps
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, total, 0, 0.0))
    mean, std = model.input_mean, model.input_std
    start = time.perf_counter()
    for i, batch in enumerate(DataLoader(ReplayBatches(batches, total), batch_size=None)):
        if i == warmup:
            torch.cuda.synchronize()
            start = time.perf_counter()
        images = batch["image"].to(device, non_blocking=True)
        targets = batch["target"].to(device, non_blocking=True)
        x = ((images.float().div_(255.0) - mean) / std).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = net(x)
        loss = F.cross_entropy(logits.float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    torch.cuda.synchronize()
    return steps * batches[0]["image"].shape[0] / (time.perf_counter() - start)


def fixmatch_steps_per_s(augment_on: str, warmup: int, steps: int, num_workers: int) -> float:
    """Steps/s of WRN-28-2 FixMatch (64 + 7 x 64, 32x32, bf16-mixed) with ``augment_on``."""
    from lit_effdl.data import SyntheticDataModule
    from lit_effdl.methods import FixMatch

    dm = SyntheticDataModule(num_classes=10, image_size=32, channels=3, num_train=8000, num_test=64,
                             num_labels=250, val_fraction=0.0, batch_size=64, unlabeled_ratio=7,
                             labeled_samples_per_epoch=64 * (warmup + steps), num_workers=num_workers,
                             labeled_augment="weak", unlabeled_weak_augment="weak",
                             unlabeled_strong_augment="strong", augment_on=augment_on)
    L.seed_everything(0, verbose=False)
    model = FixMatch(backbone="wrn_28_2", num_classes=10, channels_last=True)
    timer = EpochTimer(skip_batches=warmup)
    trainer = user_trainer(max_steps=warmup + steps, callbacks=[timer], accelerator="gpu", precision="bf16-mixed")
    trainer.fit(model, datamodule=dm)
    return steps / timer.after_skip[0]


def run(args) -> dict:
    if not torch.cuda.is_available():
        print("gpu benchmark skipped: no CUDA GPU visible to PyTorch")
        return {"skipped": True, "reason": "no CUDA GPU visible to PyTorch (torch.cuda.is_available() is False)"}
    quick = getattr(args, "quick", False)
    repeats = getattr(args, "repeats", None) or (1 if quick else 3)
    torch.backends.cudnn.benchmark = True
    card = torch.cuda.get_device_name(0)
    batch_size, warmup, steps = 128, 15, (20 if quick else 60)
    workers = min(8, os.cpu_count() or 1)
    started = time.perf_counter()

    batches = _resnet_batches(batch_size)
    lit_resnet(batches, 5, 5), plain_resnet(batches, 5, 5)  # warm-up: cuDNN autotuning, allocator
    lit, plain = [], []
    for _ in range(repeats):
        lit.append(lit_resnet(batches, warmup, steps))
        plain.append(plain_resnet(batches, warmup, steps))
    med_lit, med_plain = statistics.median(lit), statistics.median(plain)

    fm_steps, fm_warmup = (20 if quick else 60), 10
    fixmatch = {mode: fixmatch_steps_per_s(mode, fm_warmup, fm_steps, workers) for mode in ("loader", "device")}
    result = {
        "device": card,
        "resnet50_lit_images_per_s": round(med_lit, 1),
        "resnet50_plain_images_per_s": round(med_plain, 1),
        "gpu_overhead_ratio": round(med_plain / med_lit, 4),
        "resnet50_setting": f"224x224 synthetic, batch {batch_size}, bf16-mixed, channels_last, SGD nesterov",
        "fixmatch_wrn28_2_steps_per_s_loader": round(fixmatch["loader"], 2),
        "fixmatch_wrn28_2_steps_per_s_device": round(fixmatch["device"], 2),
        "fixmatch_device_vs_loader": round(fixmatch["device"] / fixmatch["loader"], 3),
        "fixmatch_setting": f"64 labeled + 7x64 unlabeled, 32x32, bf16-mixed, channels_last, {workers} workers",
        "repeats": repeats, "seconds": round(time.perf_counter() - started, 1),
    }
    print_table(f"GPU benchmark on {card}", [
        ("ResNet-50 lit-effdl", f"{med_lit:9.1f} images/s"),
        ("ResNet-50 plain loop", f"{med_plain:9.1f} images/s"),
        ("gpu_overhead_ratio (plain/lit)", f"{result['gpu_overhead_ratio']:9.4f}"),
        ("FixMatch WRN-28-2 augment_on=loader", f"{fixmatch['loader']:9.2f} steps/s"),
        ("FixMatch WRN-28-2 augment_on=device", f"{fixmatch['device']:9.2f} steps/s"),
    ])
    return result
