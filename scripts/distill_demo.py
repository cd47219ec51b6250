#!/usr/bin/env python
"""Knowledge distillation on digits: a 373k-parameter teacher teaches a 25k-parameter student.

1. trains the teacher (``small_cnn_w64``, 100 epochs, strong pipeline) on all train labels and saves
   a lit-effdl checkpoint;
2. trains the student (``--student``, default ``small_cnn_w16``, 90 epochs x 20 steps) four ways,
   for each seed, every run with the same pipeline (``--augment``, default ``strong_noflip``: only
   the teacher differs): ``student_alone_5`` (5 labels per class), ``kd_5_unlabeled`` (5 labels per class + distillation
   on the unlabeled rest), ``student_alone_all`` and ``kd_all`` (all labels, + distillation);
3. prints a table (mean and std of test accuracy over the seeds) and ends stdout with one JSON
   line of the means.

Images are upsampled to 16x16 (the digits are 8x8: nothing is lost) to keep a CPU run short.
``python scripts/distill_demo.py --jobs 2`` (two student fits at a time, one thread each; see the
README for the measured time; ``--reuse-teacher`` reuses ``OUT/teacher.ckpt``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import lightning as L
import torch

from lit_effdl.data import DigitsDataModule
from lit_effdl.experiment import results_in_order
from lit_effdl.io import write_json_atomic
from lit_effdl.methods import Distill, Supervised
from lit_effdl.runtime import tune_allocator

RUNS = ("student_alone_5", "kd_5_unlabeled", "student_alone_all", "kd_all")
IMAGE_SIZE = 16
STEPS_PER_EPOCH = 20
COMMON = dict(num_classes=10, in_chans=1, optimizer="sgd", lr=0.05, weight_decay=5e-4,
              nesterov=True, scheduler="cosine", warmup_epochs=1)
KD = dict(teacher_backbone="small_cnn_w64", unlabeled_weight=1.0)


def trainer(epochs: int, validate: bool = True) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu", devices=1, max_epochs=epochs, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        check_val_every_n_epoch=epochs, limit_val_batches=None if validate else 0,
    )


def data(seed: int, labels: int | None, unlabeled_ratio: int = 0, val_fraction: float = 0.1,
         augment: str = "crop", batch_size: int = 64) -> DigitsDataModule:
    """Digits at 16x16. An epoch is one pass over the labeled images when they are all labeled, else
    STEPS_PER_EPOCH steps of ``batch_size`` (drawn with replacement from the few labeled images)."""
    return DigitsDataModule(
        image_size=IMAGE_SIZE, num_labels_per_class=labels, split_seed=seed, batch_size=batch_size,
        val_fraction=val_fraction,
        unlabeled_ratio=unlabeled_ratio, labeled_augment=augment, unlabeled_weak_augment=augment,
        labeled_samples_per_epoch=STEPS_PER_EPOCH * batch_size if labels else None,
    )


def train_teacher(out: Path, epochs: int, augment: str) -> tuple[Path, float]:
    L.seed_everything(0, verbose=False)
    dm = data(0, None, val_fraction=0.0, augment=augment)  # every train image (the test split is never seen)
    model = Supervised(backbone="small_cnn_w64", ema_decay=0.995, **COMMON)
    fit = trainer(epochs, validate=False)
    fit.fit(model, dm)
    acc = fit.test(model, dm, verbose=False)[0]["test/acc"]
    path = out / "teacher.ckpt"
    fit.save_checkpoint(path)
    return path, acc


def train_student(run: str, seed: int, teacher: Path, student: str, epochs: int, augment: str, batch_size: int,
                  optim: dict, kd_options: dict) -> float:
    """One student fit; ``optim`` (lr, ema_decay) applies to every run, ``kd_options`` (alpha,
    temperature, mixup / cutmix alpha) to the KD runs."""
    L.seed_everything(seed, verbose=False)
    labels = 5 if run.endswith("_5") or run == "kd_5_unlabeled" else None
    if run.startswith("student_alone"):
        dm = data(seed, labels, augment=augment, batch_size=batch_size)
        model = Supervised(backbone=student, **{**COMMON, **optim})
    else:
        dm = data(seed, labels, unlabeled_ratio=1 if labels else 0, augment=augment, batch_size=batch_size)
        model = Distill(backbone=student, teacher_checkpoint=str(teacher), **kd_options, **KD,
                        **{**COMMON, **optim})
    fit = trainer(epochs)
    fit.fit(model, dm)
    return fit.test(model, dm, verbose=False)[0]["test/acc"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--student", default="small_cnn_w16", help="the student's backbone (every run)")
    parser.add_argument("--epochs", type=int, default=90, help="student epochs (about 20 steps each at batch 64)")
    parser.add_argument("--batch-size", type=int, default=64, help="labeled images per student step (every run)")
    parser.add_argument("--teacher-epochs", type=int, default=100)
    parser.add_argument("--augment", default="strong_noflip",
                        help="every student run's pipeline (with KD, teacher and student see its output)")
    parser.add_argument("--cutmix", type=float, default=0.0, help="CutMix alpha on the KD runs' labeled batches")
    parser.add_argument("--mixup", type=float, default=0.0,
                        help="Mixup alpha on the KD runs' labeled batches (function matching)")
    parser.add_argument("--lr", type=float, default=COMMON["lr"], help="every student run's peak learning rate")
    parser.add_argument("--ema", type=float, default=0.0, help="every student run's EMA decay for evaluation (0: off)")
    parser.add_argument("--alpha", type=float, default=0.1, help="KD runs: weight of the hard-label CE (1 - alpha: KD)")
    parser.add_argument("--temperature", type=float, default=4.0, help="KD runs: softmax temperature T")
    parser.add_argument("--teacher-augment", default="strong_noflip", help="the teacher's training pipeline")
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=RUNS)
    parser.add_argument("--out", default="lightning_logs/distill_demo")
    parser.add_argument("--reuse-teacher", action="store_true", help="reuse OUT/teacher.ckpt when present")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--jobs", type=int, default=1, help="student fits run in parallel (one thread each)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    tune_allocator()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    teacher = out / "teacher.ckpt"
    if args.reuse_teacher and teacher.is_file():
        model = Supervised.load_from_checkpoint(teacher, map_location="cpu")
        acc = trainer(1).test(model, data(0, None), verbose=False)[0]["test/acc"]
        print(f"teacher small_cnn_w64 (all labels): reusing {teacher}, test/acc {acc:.4f}", flush=True)
    else:
        teacher, acc = train_teacher(out, args.teacher_epochs, args.teacher_augment)
        print(f"teacher small_cnn_w64 (all labels): test/acc {acc:.4f}  [{time.time() - start:.0f}s]", flush=True)
    kd_options = dict(alpha=args.alpha, temperature=args.temperature, cutmix_alpha=args.cutmix,
                      mixup_alpha=args.mixup)
    jobs = [(run, seed, teacher, args.student, args.epochs, args.augment, args.batch_size,
             {"lr": args.lr, "ema_decay": args.ema}, kd_options)
            for seed in args.seeds for run in args.runs]
    accs = {}
    for (run, seed, *_), acc in zip(jobs, results_in_order(train_student, jobs, args.jobs)):
        accs[run, seed] = acc
        print(f"seed {seed} {run:<18} test/acc {acc:.4f}  [{time.time() - start:.0f}s]", flush=True)
    results = {run: [accs[run, seed] for seed in args.seeds] for run in args.runs}
    print(f"\nstudent {args.student}, test accuracy over seeds {args.seeds} (mean +- std)")
    summary = {}
    for run, accs in results.items():
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        summary[run] = round(statistics.mean(accs), 4)
        print(f"  {run:<18} {summary[run]:.4f} +- {std:.4f}   {' '.join(f'{a:.4f}' for a in accs)}")
    print(f"total {time.time() - start:.0f}s")
    write_json_atomic(out / "results.json", {"per_seed": results, "mean": summary})
    sys.stdout.flush()
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
