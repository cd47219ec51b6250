"""Tiny datasets in the real on-disk formats (CIFAR-10 pickles, STL-10 binaries), for tests."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def write_pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as handle:
        pickle.dump(obj, handle)


def make_tiny_cifar10(root: Path, per_batch: int = 20) -> Path:
    """``root/cifar-10-batches-py``: 5 train batches and a test batch of ``per_batch`` random images."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        write_pickle(folder / name, {
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"labels": [i % 10 for i in range(per_batch)],
        })
    write_pickle(folder / "batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})
    return root


def make_tiny_stl10(root: Path, train: int = 20, test: int = 10, unlabeled: int = 7) -> np.ndarray:
    """``root/stl10_binary`` (column-major images, labels 1-10); returns the train images (row-major)."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (max(train, test, unlabeled), 3, 96, 96), dtype=np.uint8)
    # STL-10 stores images column-major: write the transpose, read back the original
    images[:train].transpose(0, 1, 3, 2).tofile(folder / "train_X.bin")
    (np.arange(train) % 10 + 1).astype(np.uint8).tofile(folder / "train_y.bin")
    images[:test].transpose(0, 1, 3, 2).tofile(folder / "test_X.bin")
    (np.arange(test) % 10 + 1).astype(np.uint8).tofile(folder / "test_y.bin")
    images[:unlabeled].transpose(0, 1, 3, 2).tofile(folder / "unlabeled_X.bin")
    (folder / "class_names.txt").write_text("\n".join(f"k{i}" for i in range(10)))
    return images[:train]
