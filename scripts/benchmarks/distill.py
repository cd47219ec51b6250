"""Distillation step cost: cached teacher logits vs online teacher vs the student alone.

Three fits on the same digits batches (all labels, no augmentation so the cache is valid), a
small_cnn_w16 student and a small_cnn_w64 teacher, interleaved round by round; the median time
of a training step (``on_train_batch_start`` -> ``on_train_batch_end``, Lightning's own step with
forward, backward and optimizer) is compared. Key result: ``cached_vs_student_alone``.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from benchmarks._timing import print_table
from lit_effdl.data import DigitsDataModule
from lit_effdl.methods import Distill, Supervised
from lit_effdl.models import create_backbone


class StepTimer(Callback):
    """Wall time of every training step after ``skip`` warm-up steps."""

    def __init__(self, skip: int = 3):
        self.skip, self.times, self._start = skip, [], 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if batch_idx >= self.skip:
            self.times.append(time.perf_counter() - self._start)


def _fit(model: L.LightningModule, steps: int) -> list[float]:
    timer = StepTimer()
    dm = DigitsDataModule(image_size=16, batch_size=64, labeled_augment="none", num_workers=0)
    L.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
              limit_val_batches=0, callbacks=[timer]).fit(model, dm)
    return timer.times


def run(args) -> dict:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    repeats = args.repeats or (2 if args.quick else 5)
    steps = 8 if args.quick else 23
    common = dict(backbone="small_cnn_w16", num_classes=10, in_chans=1, lr=0.05)
    with tempfile.TemporaryDirectory() as tmp:
        teacher = Path(tmp) / "teacher.pt"
        torch.save(create_backbone("small_cnn_w64", 10, in_chans=1).state_dict(), teacher)
        kd = dict(teacher_backbone="small_cnn_w64", teacher_checkpoint=str(teacher), **common)
        times: dict[str, list[float]] = {"student_alone": [], "kd_cached": [], "kd_online": []}
        for r in range(repeats):
            L.seed_everything(r, verbose=False)
            times["student_alone"] += _fit(Supervised(**common), steps)
            times["kd_cached"] += _fit(Distill(cache_teacher_logits=True,
                                               teacher_cache_file=str(Path(tmp) / "logits.pt"), **kd), steps)
            times["kd_online"] += _fit(Distill(**kd), steps)
    median = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "cached_vs_student_alone": round(median["kd_cached"] / median["student_alone"], 3),
        "online_vs_student_alone": round(median["kd_online"] / median["student_alone"], 3),
        **{f"{k}_step_ms": round(1000 * v, 2) for k, v in median.items()},
        "steps_timed": len(times["student_alone"]),
    }
    print_table(f"distill step time, batch 64 digits 16x16, w16 student / w64 teacher, CPU, "
                f"median of {result['steps_timed']} steps each", [(k, str(v)) for k, v in result.items()])
    return result
