"""FixMatch steps on your own images (a folder of PNGs) vs the same images in memory.

The digits (the 1,437 train and 360 test images of ``DigitsDataModule`` at 32x32, grey) are written
as 32x32 PNGs in the ``ImageFolderDataModule`` layout of a user with 5 labels per class:
``labeled/<class>/`` (50 images), ``unlabeled/`` (the other 1,387, loose: no hidden label) and
``test/<class>/``. Three arms train ``configs/digits/fixmatch.yaml``'s FixMatch and data settings
(small_cnn at 16x16, 16 labeled + 7 x 16 weak + 7 x 16 strong images a step, ``augment_on: device``)
through ``Trainer.fit`` in this process, one thread, same seeds:
(a) ``png``: ``ImageFolderDataModule`` on the folder, its default ``cache_decoded_mb`` (decoded once at
setup, not timed: ``png_setup_s``); (b) ``memory``: ``DigitsDataModule`` at 16x16; (c) ``decoding``: the
folder with ``cache_decoded_mb: 0`` (every step decodes and resizes its 240 files), the reference.
Arms alternate; the first steps of each fit are untimed. ``imagefolder_vs_memory`` = median seconds
per step (a) / (b) (target <= 1.5); ``decoding_vs_memory`` = (c) / (b).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
import yaml

from benchmarks._fit import EpochTimer, user_trainer
from benchmarks._timing import alternating, print_table, ratios

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "digits" / "fixmatch.yaml"
LABELS_PER_CLASS, PNG_SIZE = 5, 32


def write_image_folder(train, test, root: Path, labels_per_class: int = LABELS_PER_CLASS) -> Path:
    """``root/labeled/<class>/``, ``root/unlabeled/`` (loose) and ``root/test/<class>/`` PNGs of the
    ``TensorImages`` ``train`` and ``test``: ``labels_per_class`` of each class labeled (stratified, seed 0)."""
    from torchvision.io import write_png

    from lit_effdl.data.splits import stratified_take

    labeled, _ = stratified_take(train.targets, per_class=labels_per_class, seed=0)
    is_labeled = np.zeros(len(train), dtype=bool)
    is_labeled[labeled] = True
    for i in range(len(train)):
        folder = root / "labeled" / train.classes[train.targets[i]] if is_labeled[i] else root / "unlabeled"
        folder.mkdir(parents=True, exist_ok=True)
        write_png(train.load(i), str(folder / f"{i:05d}.png"))
    for i in range(len(test)):
        folder = root / "test" / test.classes[test.targets[i]]
        folder.mkdir(parents=True, exist_ok=True)
        write_png(test.load(i), str(folder / f"{i:05d}.png"))
    return root


def fixmatch_settings() -> tuple[dict, dict]:
    """``(model init_args, data init_args)`` of the digits FixMatch config; grey images, no validation."""
    config = yaml.safe_load(CONFIG.read_text())
    data = {**config["data"]["init_args"], "val_fraction": 0.0}
    return dict(config["model"]["init_args"]), data


def seconds_per_step(make_data, steps: int, skip: int) -> tuple[float, float]:
    """(wall, CPU) seconds per FixMatch step of ``Trainer.fit`` on ``make_data()`` after ``skip`` steps."""
    from lit_effdl.methods import FixMatch

    model_args, _ = fixmatch_settings()
    dm = make_data()
    dm.setup("fit")  # the images decoded once (the PNG arm): not part of a step
    L.seed_everything(0, verbose=False)
    model = FixMatch(**model_args, num_classes=10, in_chans=1)
    timer = EpochTimer(skip_batches=skip)
    trainer = user_trainer(max_epochs=1, limit_train_batches=steps, callbacks=[timer])
    trainer.fit(model, datamodule=dm)
    n = steps - skip
    return timer.after_skip[0] / n, timer.after_skip_cpu[0] / n


def run(args) -> dict:
    from lit_effdl.data import DigitsDataModule, ImageFolderDataModule

    torch.set_num_threads(1)
    quick = getattr(args, "quick", False)
    repeats = getattr(args, "repeats", None) or (1 if quick else 3)
    steps, skip = (5, 2) if quick else (14, 3)
    _, data_args = fixmatch_settings()
    with tempfile.TemporaryDirectory(prefix="lit_effdl_bench_png_") as tmp:
        sources = DigitsDataModule(channels=1, image_size=PNG_SIZE).load_sources()
        root = write_image_folder(sources.train, sources.test, Path(tmp))

        def folder(**kw):
            return ImageFolderDataModule(root=str(root / "labeled"), test_root=str(root / "test"),
                                         unlabeled_root=str(root / "unlabeled"), channels=1, **data_args, **kw)

        start = time.perf_counter()
        folder().setup("fit")
        setup_s = time.perf_counter() - start
        arms = {
            "png": lambda: seconds_per_step(folder, steps, skip),
            "memory": lambda: seconds_per_step(lambda: DigitsDataModule(channels=1, **data_args), steps, skip),
            "decoding": lambda: seconds_per_step(lambda: folder(cache_decoded_mb=0), steps, skip),
        }
        seconds_per_step(folder, skip + 2, skip)  # warm-up
        times, med, med_cpu = alternating(arms, repeats)
    ratio, cpu_ratio, paired = ratios(times, med, med_cpu, "png", "memory")
    labeled = LABELS_PER_CLASS * len(sources.train.classes)
    result = {
        "imagefolder_vs_memory": ratio, "cpu_time_ratio": cpu_ratio, "paired_ratio_median": paired,
        "decoding_vs_memory": ratios(times, med, med_cpu, "decoding", "memory")[0],
        "png_step_ms": round(1000 * med["png"], 2), "memory_step_ms": round(1000 * med["memory"], 2),
        "decoding_step_ms": round(1000 * med["decoding"], 2), "png_setup_s": round(setup_s, 3),
        "images": {"labeled": labeled, "unlabeled": len(sources.train) - labeled, "test": len(sources.test)},
        "image_size": data_args["image_size"], "png_size": PNG_SIZE, "backbone": "small_cnn",
        "timed_steps_per_fit": steps - skip, "threads": 1, "repeats": repeats,
    }
    print_table(f"FixMatch step, own PNG folder vs in memory (digits, {PNG_SIZE}px PNGs -> "
                f"{data_args['image_size']}px, small_cnn, 1 thread)", [
        ("PNG folder (decoded once, cached)", f"{result['png_step_ms']:8.1f} ms  (setup {setup_s:.2f} s)"),
        ("in memory (DigitsDataModule)", f"{result['memory_step_ms']:8.1f} ms"),
        ("PNG folder, decoding every step", f"{result['decoding_step_ms']:8.1f} ms"),
        ("imagefolder_vs_memory", f"{ratio:8.4f}  (target <= 1.5)"),
        ("decoding_vs_memory", f"{result['decoding_vs_memory']:8.4f}"),
    ])
    return result
