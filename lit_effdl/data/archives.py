"""CIFAR-10/100 and STL-10 read from their official files on disk (never downloaded at run time)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from lit_effdl.data.sources import TensorImages
from lit_effdl.errors import UserError


def _missing(name: str, folder: Path, files: Sequence[str], url: str) -> UserError:
    return UserError(f"{name} not found in {folder}: place {', '.join(files)} there (from {url}, extracted); "
                     f"nothing is downloaded at run time")


def _find_dir(root: str | Path, subdir: str, required: Sequence[str]) -> Path | None:
    root = Path(root).expanduser()
    for candidate in (root / subdir, root):
        if all((candidate / f).is_file() for f in required):
            return candidate
    return None


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as handle:
        return pickle.load(handle, encoding="bytes")  # the dataset's own format


def _cifar_images(raw: bytes | np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(raw, dtype=np.uint8).reshape(-1, 3, 32, 32).copy())


def cifar_sources(root: str | Path, num_classes: int = 10) -> tuple[TensorImages, TensorImages]:
    """CIFAR-10 / CIFAR-100 from the python pickles (torchvision's MD5 check would reject
    subsets, so the documented format is read directly)."""
    if num_classes == 10:
        subdir, train_files, test_file, meta, names_key, labels_key = (
            "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch",
            "batches.meta", b"label_names", b"labels",
        )
        url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    elif num_classes == 100:
        subdir, train_files, test_file, meta, names_key, labels_key = (
            "cifar-100-python", ["train"], "test", "meta", b"fine_label_names", b"fine_labels",
        )
        url = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    else:
        raise UserError(f"CIFAR num_classes={num_classes} is not valid: use 10 or 100")
    required = [*train_files, test_file, meta]
    folder = _find_dir(root, subdir, required)
    if folder is None:
        raise _missing(f"CIFAR-{num_classes}", Path(root) / subdir, required, url)
    classes = [n.decode() for n in _unpickle(folder / meta)[names_key]]
    batches = [_unpickle(folder / f) for f in train_files]
    train = TensorImages(torch.cat([_cifar_images(b[b"data"]) for b in batches]),
                         np.concatenate([np.asarray(b[labels_key]) for b in batches]), classes)
    test_batch = _unpickle(folder / test_file)
    test = TensorImages(_cifar_images(test_batch[b"data"]), test_batch[labels_key], classes)
    return train, test


def _stl_images(path: Path) -> np.ndarray:
    """STL-10 stores each image column-major; a memmap keeps the 100k unlabeled images on disk."""
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    return raw.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)


def stl10_sources(root: str | Path) -> tuple[TensorImages, TensorImages, TensorImages]:
    """STL-10 binary format: (train 5k labeled, test 8k, unlabeled 100k), images read lazily."""
    required = ["train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin", "unlabeled_X.bin", "class_names.txt"]
    folder = _find_dir(root, "stl10_binary", required)
    if folder is None:
        raise _missing("STL-10", Path(root) / "stl10_binary", required,
                       "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz")
    classes = (folder / "class_names.txt").read_text().split()

    def labels(name: str) -> np.ndarray:
        return np.fromfile(folder / name, dtype=np.uint8).astype(np.int64) - 1  # stored 1..10

    train = TensorImages(_stl_images(folder / "train_X.bin"), labels("train_y.bin"), classes)
    test = TensorImages(_stl_images(folder / "test_X.bin"), labels("test_y.bin"), classes)
    unlabeled_images = _stl_images(folder / "unlabeled_X.bin")
    unlabeled = TensorImages(unlabeled_images, np.full(len(unlabeled_images), -1), classes)
    return train, test, unlabeled
