"""MNIST from disk, never downloaded at run time: torchvision's IDX files or the classic ``mnist.pkl.gz``.

Training pool = the 60,000 training images (the pickle's 50,000 train + 10,000 validation images),
test = the official 10,000. ``make data`` (``scripts/get_mnist.py``) places the checked pickle in
``data/mnist/``.
"""

from __future__ import annotations

import gzip
import io
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lit_effdl.data.datamodule import LabelBudgetDataModule, Sources
from lit_effdl.data.sources import TensorImages
from lit_effdl.errors import UserError

GET_COMMAND = "make data (python scripts/get_mnist.py)"
PICKLE_FILE = "mnist.pkl.gz"
PICKLE_SIZE = 17_051_982
PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
IDX_MAGIC = {"images": 2051, "labels": 2049}
CLASSES = [str(d) for d in range(10)]
SIDE = 28


class _ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers only: a pickle can run any code it names, so
    every other global is refused."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}  # encode: bytes in protocol 2

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in an MNIST pickle")
        return super().find_class(module, name)


def _corrupt(path: Path, why: str) -> UserError:
    return UserError(f"MNIST file {path} is unreadable ({why}): remove it and run {GET_COMMAND}")


def _to_uint8(images: np.ndarray) -> torch.Tensor:
    """(N, 784) floats in [0, 1) (pixel / 256) -> uint8 (N, 1, 28, 28)."""
    pixels = np.clip(np.rint(np.asarray(images, dtype=np.float32) * 256.0), 0, 255).astype(np.uint8)
    return torch.from_numpy(pixels.reshape(-1, 1, SIDE, SIDE))


def read_pickle(path: Path) -> tuple[TensorImages, TensorImages]:
    """``mnist.pkl.gz``: ((train x, y), (validation x, y), (test x, y)); train + validation form the pool."""
    try:
        with gzip.open(path, "rb") as handle:
            parts = _ArraysOnly(io.BytesIO(handle.read()), encoding="latin1").load()
        (train_x, train_y), (val_x, val_y), (test_x, test_y) = parts
        pool = TensorImages(_to_uint8(np.concatenate([train_x, val_x])), np.concatenate([train_y, val_y]), CLASSES)
        test = TensorImages(_to_uint8(test_x), test_y, CLASSES)
    except (OSError, EOFError, ValueError, TypeError, pickle.UnpicklingError) as err:
        raise _corrupt(path, f"{type(err).__name__}: {err}") from None
    return pool, test


def _idx_array(path: Path, kind: str) -> np.ndarray:
    """One IDX file (plain or .gz): big-endian magic, sizes, then uint8 values."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    dims = 3 if kind == "images" else 1
    header = np.frombuffer(raw[: 4 * (dims + 1)], dtype=">i4")
    if len(header) != dims + 1 or header[0] != IDX_MAGIC[kind]:
        raise _corrupt(path, f"not an IDX {kind} file (magic number {header[0] if len(header) else 'missing'}, "
                             f"expected {IDX_MAGIC[kind]})")
    shape = tuple(int(n) for n in header[1:])
    values = np.frombuffer(raw, dtype=np.uint8, offset=4 * (dims + 1))
    if values.size != int(np.prod(shape)):
        raise _corrupt(path, f"{values.size} values for shape {shape}")
    return values.reshape(shape)


def read_idx(folder: Path) -> tuple[TensorImages, TensorImages]:
    """torchvision's layout: ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` in ``folder``."""
    out = []
    for split in ("train", "test"):
        images, labels = (_idx_file(folder, name) for name in IDX_FILES[split])
        x, y = _idx_array(images, "images"), _idx_array(labels, "labels")
        if len(x) != len(y) or x.shape[1:] != (SIDE, SIDE):
            raise _corrupt(images, f"{len(x)} images of {x.shape[1:]} for {len(y)} labels")
        out.append(TensorImages(torch.from_numpy(x.copy()).unsqueeze(1), y.astype(np.int64), CLASSES))
    return out[0], out[1]


def _idx_file(folder: Path, name: str) -> Path:
    plain = folder / name
    return plain if plain.is_file() else folder / f"{name}.gz"


def _idx_folder(root: Path) -> Path | None:
    for folder in (root / "MNIST" / "raw", root / "raw", root):
        if all(_idx_file(folder, n).is_file() for pair in IDX_FILES.values() for n in pair):
            return folder
    return None


def mnist_sources(root: str | Path) -> tuple[TensorImages, TensorImages]:
    """(60k training pool, 10k test) from ``root``: torchvision's IDX files (``root/MNIST/raw``) win
    over ``root/mnist.pkl.gz`` (``root`` may also be the pickle itself)."""
    root = Path(root).expanduser()
    if root.is_file():
        return read_pickle(root)
    folder = _idx_folder(root)
    if folder is not None:
        return read_idx(folder)
    if (root / PICKLE_FILE).is_file():
        return read_pickle(root / PICKLE_FILE)
    raise UserError(f"MNIST not found in {root}: run {GET_COMMAND} to place {PICKLE_FILE} in data/mnist/, "
                    f"or point data.root at a folder with torchvision's MNIST/raw/ files")


class MNISTDataModule(LabelBudgetDataModule):
    """MNIST digits, 1x28x28 uint8 (resized to ``image_size``), 60,000 training pool, official 10,000 test.

    Digits are not mirror-symmetric: the default weak / strong pipelines leave out the flip; the
    weak one jitters by up to 2 pixels (``crop-pad2``).

    Args:
        root: folder with ``mnist.pkl.gz`` or torchvision's ``MNIST/raw/`` (or the pickle itself).
        image_size: side of the images (28: unchanged; otherwise a bilinear resize).
        channels: 1 (grey) or 3 (grey repeated, for ImageNet-style backbones).
    """

    default_weak = "crop-pad2"
    default_strong = "strong_noflip"

    def __init__(self, root: str = "data/mnist", image_size: int = SIDE, channels: int = 1, **kwargs):
        super().__init__(**kwargs)
        if channels not in (1, 3):
            raise UserError(f"channels={channels} is not valid for MNIST: use 1 or 3")
        if image_size < 8:
            raise UserError(f"image_size={image_size} is not valid for MNIST: use 8 or more (28: unchanged)")
        self.root, self.size, self.channels = root, image_size, channels

    def load_sources(self) -> Sources:
        train, test = mnist_sources(self.root)
        return Sources(train=self._shaped(train), test=self._shaped(test))

    def _shaped(self, source: TensorImages) -> TensorImages:
        images = source.images
        if self.size != SIDE:
            resized = F.interpolate(images.float(), size=(self.size, self.size), mode="bilinear", antialias=True)
            images = resized.round().clamp(0, 255).to(torch.uint8)
        return TensorImages(images.expand(-1, self.channels, -1, -1).contiguous(), source.targets, source.classes)
