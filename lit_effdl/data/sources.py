"""One adapter per dataset: images (in memory or read lazily), targets and class names.

No augmentation here. Every source yields ``uint8`` tensors shaped ``(C, H, W)``; targets are
``int64`` numpy arrays with ``-1`` where a label is unknown (loose unlabeled images).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lit_effdl.errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class ImageSource:
    """A sized collection of images with targets and class names."""

    classes: list[str]
    targets: np.ndarray
    channels: int

    def __len__(self) -> int:
        return len(self.targets)

    def load(self, i: int) -> torch.Tensor:
        raise NotImplementedError

    def describe(self, i: int) -> str:
        """A human name for item ``i`` (a file path where there is one)."""
        return f"#{i}"


@dataclass
class Sources:
    """What a dataset adapter hands the data module."""

    train: ImageSource
    test: ImageSource
    val: ImageSource | None = None  # None: carved from train by ``val_fraction``
    extra_unlabeled: ImageSource | None = None  # e.g. STL-10's 100k unlabeled images


class TensorImages(ImageSource):
    """Images held as one array: a uint8 tensor ``(N, C, H, W)`` or a (memory-mapped) numpy array."""

    def __init__(self, images, targets: Sequence[int], classes: list[str]):
        self.images = images
        self.targets = np.asarray(targets, dtype=np.int64)
        self.classes = list(classes)
        self.channels = int(images.shape[1])
        if len(self.images) != len(self.targets):
            raise ValueError(f"{len(self.images)} images but {len(self.targets)} targets")

    def load(self, i: int) -> torch.Tensor:
        image = self.images[i]
        return image if isinstance(image, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(image))


class FileImages(ImageSource):
    """Images read from files on demand (nothing but the path list is kept in memory), or, after
    :meth:`decode_all`, served from one in-memory :class:`TensorImages` of the decoded images."""

    def __init__(self, paths: Sequence[str | Path], targets: Sequence[int] | None, classes: list[str],
                 image_size: int | None = None, channels: int = 3, skip_corrupt: bool = False):
        self.paths = [str(p) for p in paths]
        self.skip_corrupt = skip_corrupt
        self.skipped: set[str] = set()  # corrupted files met so far (in this process)
        unknown = np.full(len(self.paths), -1, dtype=np.int64)
        self.targets = unknown if targets is None else np.asarray(targets, dtype=np.int64)
        self.classes = list(classes)
        self.image_size = image_size
        self.channels = channels
        self.decoded: TensorImages | None = None  # set by decode_all()

    def describe(self, i: int) -> str:
        return self.paths[i]

    def decoded_bytes(self) -> int:
        """Memory the images take decoded and resized to ``image_size`` (uint8)."""
        return len(self) * self.channels * (self.image_size or 0) ** 2

    def decode_all(self) -> None:
        """Decode (and resize) every image once; later loads read the in-memory array."""
        if self.decoded is None:
            if self.image_size is None:
                raise ValueError("images of their own sizes cannot be held as one array: give image_size")
            images = torch.empty((len(self), self.channels, self.image_size, self.image_size), dtype=torch.uint8)
            for i in range(len(self)):
                images[i] = self.load(i)
            self.decoded = TensorImages(images, self.targets, self.classes)

    def load(self, i: int) -> torch.Tensor:
        if self.decoded is not None:
            return self.decoded.load(i)
        from torchvision.io import ImageReadMode, decode_image, read_file

        mode = ImageReadMode.RGB if self.channels == 3 else ImageReadMode.GRAY
        try:
            image = decode_image(read_file(self.paths[i]), mode=mode)
        except Exception as err:  # torchvision raises RuntimeError with a codec message
            if not self.skip_corrupt:
                raise UserError(f"cannot decode image file {self.paths[i]}: {err} (skip_corrupt: true skips such files)") from None
            if self.paths[i] not in self.skipped:
                self.skipped.add(self.paths[i])
                warnings.warn(f"skipping corrupted image {self.paths[i]} ({len(self.skipped)} skipped so far)")
            if len(self.skipped) >= len(self.paths):
                raise UserError(f"every image under {Path(self.paths[0]).parent} is corrupted") from None
            return self.load((i + 1) % len(self.paths))  # the next readable image stands in
        if self.image_size is not None and tuple(image.shape[-2:]) != (self.image_size,) * 2:
            from torchvision.transforms.v2 import functional as TF

            image = TF.resize(image, [self.image_size, self.image_size], antialias=True)
        return image


class SubsetSource(ImageSource):
    """A view on some positions of another source."""

    def __init__(self, source: ImageSource, indices: Sequence[int]):
        self.source = source
        self.indices = np.asarray(indices, dtype=np.int64)
        self.targets = source.targets[self.indices]
        self.classes = source.classes
        self.channels = source.channels

    def load(self, i: int) -> torch.Tensor:
        return self.source.load(int(self.indices[i]))

    def describe(self, i: int) -> str:
        return self.source.describe(int(self.indices[i]))


class ConcatSource(ImageSource):
    """Several sources one after the other (train-split leftovers + an extra unlabeled set)."""

    def __init__(self, sources: Sequence[ImageSource]):
        self.sources = [s for s in sources if len(s) > 0]
        if not self.sources:
            self.sources = list(sources[:1])
        self.offsets = np.cumsum([0] + [len(s) for s in self.sources])
        self.targets = np.concatenate([s.targets for s in self.sources]) if self.sources else np.zeros(0, np.int64)
        self.classes = self.sources[0].classes if self.sources else []
        self.channels = self.sources[0].channels if self.sources else 3

    def _locate(self, i: int) -> tuple[ImageSource, int]:
        k = int(np.searchsorted(self.offsets, i, side="right") - 1)
        return self.sources[k], i - int(self.offsets[k])

    def load(self, i: int) -> torch.Tensor:
        source, j = self._locate(i)
        return source.load(j)

    def describe(self, i: int) -> str:
        source, j = self._locate(i)
        return source.describe(j)


# ---------------------------------------------------------------- embedded and synthetic


def digits_sources(channels: int = 1, image_size: int = 32) -> tuple[TensorImages, TensorImages]:
    """scikit-learn's 1797 8x8 digits, upsampled; test = a stratified 20% drawn with seed 0."""
    from sklearn.datasets import load_digits

    from lit_effdl.data.splits import stratified_take

    if channels not in (1, 3):
        raise UserError(f"channels={channels} is not valid for digits: use 1 or 3")
    digits = load_digits()
    images = torch.from_numpy(digits.images).float().unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, channels, -1, -1).contiguous()
    targets = digits.target.astype(np.int64)
    test_idx, train_idx = stratified_take(targets, fraction=0.2, seed=0)
    classes = [str(d) for d in range(10)]
    return (
        TensorImages(images[train_idx], targets[train_idx], classes),
        TensorImages(images[test_idx], targets[test_idx], classes),
    )


def synthetic_images(num_images: int, num_classes: int, image_size: int, channels: int, seed: int) -> TensorImages:
    """Class-conditional procedural images: each class a grating of its own orientation (within
    [0, pi/2), so a horizontal flip never turns one class into another), frequency and colour,
    randomly shifted, with noise; learnable by a small CNN in a few steps."""
    rng = np.random.default_rng(seed)
    targets = np.arange(num_images) % num_classes
    rng.shuffle(targets)
    yy, xx = np.mgrid[0:image_size, 0:image_size].astype(np.float32) / image_size
    angles = 0.5 * np.pi * np.arange(num_classes) / num_classes
    freqs = 1.5 + (np.arange(num_classes) % 3)
    colours = np.random.default_rng(1234).uniform(-1.0, 1.0, size=(num_classes, channels))
    images = np.empty((num_images, channels, image_size, image_size), dtype=np.uint8)
    for n, c in enumerate(targets):
        phase = rng.uniform(0, 2 * np.pi)
        wave = np.sin(2 * np.pi * freqs[c] * (np.cos(angles[c]) * xx + np.sin(angles[c]) * yy) + phase)
        pattern = 0.5 + 0.25 * wave[None] + 0.2 * colours[c][:, None, None]
        pattern = pattern + rng.normal(0, 0.05, size=pattern.shape)
        images[n] = (np.clip(pattern, 0, 1) * 255).astype(np.uint8)
    return TensorImages(torch.from_numpy(images), targets, [f"class_{k}" for k in range(num_classes)])


# ---------------------------------------------------------------- real datasets on disk


def list_images(root: str | Path) -> list[Path]:
    """Every image file under ``root`` (recursive), sorted for a stable order."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"image folder {root} does not exist or is not a directory")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def image_folder_source(root: str | Path, image_size: int | None, channels: int = 3,
                        skip_corrupt: bool = False) -> FileImages:
    """A labeled folder: one sub-folder per class, holding that class's images."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"image folder {root} does not exist: give a folder with one sub-folder per class")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise UserError(f"image folder {root} has no class sub-folders: expected {root}/<class>/<image>")
    paths, targets = [], []
    for k, name in enumerate(classes):
        files = list_images(root / name)
        paths += files
        targets += [k] * len(files)
    if not paths:
        raise UserError(f"image folder {root} holds no images with extensions {IMAGE_EXTENSIONS}")
    return FileImages(paths, targets, classes, image_size, channels, skip_corrupt)


def loose_images_source(root: str | Path, classes: list[str], image_size: int | None, channels: int = 3,
                        skip_corrupt: bool = False) -> FileImages:
    """A folder of unlabeled images (any nesting); an empty folder is an error."""
    paths = list_images(root)
    if not paths:
        raise UserError(f"unlabeled folder {root} holds no images with extensions {IMAGE_EXTENSIONS}")
    return FileImages(paths, None, classes, image_size, channels, skip_corrupt)
