"""Tiny datasets in the real on-disk formats (CIFAR-10 pickles, STL-10 binaries, MNIST), for tests."""

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


def tiny_digits(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``count`` 28x28 uint8 images whose class (0-9) is a bright 4x4 block's position, on noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 10
    images = rng.integers(0, 40, (count, 28, 28), dtype=np.uint8)
    for image, label in zip(images, labels):
        row, col = 4 + 6 * (label // 5), 3 + 5 * (label % 5)
        image[row:row + 4, col:col + 4] = 250
    return images, labels


def make_tiny_mnist_pickle(path: Path, train: int = 50, val: int = 10, test: int = 20) -> np.ndarray:
    """The classic ``mnist.pkl.gz`` layout (floats pixel / 256, (N, 784)); returns the pool's images."""
    import gzip

    images, labels = tiny_digits(train + val + test)
    x = images.reshape(len(images), -1).astype(np.float32) / 256.0
    cut = [0, train, train + val, train + val + test]
    parts = tuple((x[a:b], labels[a:b].astype(np.int64)) for a, b in zip(cut, cut[1:]))
    with gzip.open(path, "wb") as handle:
        pickle.dump(parts, handle, protocol=2)
    return images[:train + val]


def make_tiny_mnist_idx(root: Path, train: int = 40, test: int = 20, gz: bool = False) -> np.ndarray:
    """torchvision's ``root/MNIST/raw`` IDX files (big-endian header); returns the train images."""
    import gzip

    folder = root / "MNIST" / "raw"
    folder.mkdir(parents=True)
    images, labels = tiny_digits(train + test, seed=1)
    for prefix, x, y in (("train", images[:train], labels[:train]), ("t10k", images[train:], labels[train:])):
        for name, magic, data in ((f"{prefix}-images-idx3-ubyte", 2051, x), (f"{prefix}-labels-idx1-ubyte", 2049, y)):
            raw = np.array([magic, *data.shape], dtype=">i4").tobytes() + data.astype(np.uint8).tobytes()
            (folder / (name + ".gz" if gz else name)).write_bytes(gzip.compress(raw) if gz else raw)
    return images[:train]
