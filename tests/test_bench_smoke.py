"""Benchmark plumbing that runs in seconds: the GPU script's skip path and the growth slope."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))


def test_bench_gpu_skips_cleanly_without_gpu(tmp_path):
    out = tmp_path / "gpu.json"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "bench_gpu.sh"), str(out)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "SKIPPED" in proc.stdout and "no CUDA GPU" in proc.stdout
    assert json.loads(out.read_text())["skipped"] is True


def test_growth_slope_reads_linear_and_quadratic():
    from benchmarks.growth import slope

    sizes = [1.0, 2.0, 4.0]
    assert slope(sizes, [3.0 * s for s in sizes]) == pytest.approx(1.0)
    assert slope(sizes, [s * s for s in sizes]) == pytest.approx(2.0)


def test_imagefolder_bench_writes_the_users_layout_with_the_same_pixels(tmp_path):
    """The ``imagefolder`` suite's folder: class folders of the labeled images, the rest loose (no
    hidden label), a test folder; each PNG holds exactly the in-memory image it was written from."""
    import torch

    from bench import suites
    from benchmarks.imagefolder import write_image_folder
    from lit_effdl.data import ImageFolderDataModule
    from lit_effdl.data.sources import synthetic_images

    assert "imagefolder" in suites()
    train, test = synthetic_images(30, 3, 16, 1, seed=0), synthetic_images(6, 3, 16, 1, seed=1)
    root = write_image_folder(train, test, tmp_path, labels_per_class=2)
    dm = ImageFolderDataModule(root=str(root / "labeled"), test_root=str(root / "test"),
                               unlabeled_root=str(root / "unlabeled"), image_size=16, channels=1,
                               num_labels_per_class=2, val_fraction=0.0)
    dm.setup("fit")
    assert len(dm.labeled_source) == 6 and len(dm.sources.test) == 6 and len(dm.unlabeled_source) == 24
    assert (dm.unlabeled_source.targets == -1).all()
    for files in (dm.sources.train, dm.sources.extra_unlabeled):
        for k, path in enumerate(files.paths):
            assert torch.equal(files.load(k), train.load(int(Path(path).stem)))
            assert files.targets[k] in (-1, train.targets[int(Path(path).stem)])
