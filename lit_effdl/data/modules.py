"""Data modules for each source: each one picks a source and its defaults, nothing else."""

from __future__ import annotations

from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lit_effdl.data.archives import cifar_sources, stl10_sources
from lit_effdl.data.datamodule import LabelBudgetDataModule, Sources
from lit_effdl.data.sources import (
    SubsetSource,
    digits_sources,
    image_folder_source,
    loose_images_source,
    synthetic_images,
)
from lit_effdl.errors import UserError


class DigitsDataModule(LabelBudgetDataModule):
    """scikit-learn's handwritten digits (embedded, offline), 8x8 upsampled to ``image_size``.

    The test split is a fixed stratified 20% (seed 0). Digits are not mirror-symmetric, so the
    default weak / strong pipelines leave out the horizontal flip.

    Args:
        channels: 1 (grey) or 3 (grey repeated, for ImageNet-style backbones).
        image_size: side of the upsampled square image.
    """

    default_weak = "weak_noflip"
    default_strong = "strong_noflip"

    def __init__(self, channels: int = 1, image_size: int = 32, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.size = image_size

    def load_sources(self) -> Sources:
        train, test = digits_sources(self.channels, self.size)
        return Sources(train=train, test=test)


class SyntheticDataModule(LabelBudgetDataModule):
    """Procedurally drawn class-conditional images of any size and class count (for tests).

    Args:
        num_classes: number of classes.
        image_size: side of the square images.
        channels: image channels.
        num_train: train split size; num_test: test split size; seed: drawing seed.
    """

    def __init__(
        self,
        num_classes: int = 4,
        image_size: int = 16,
        channels: int = 3,
        num_train: int = 256,
        num_test: int = 64,
        seed: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.spec = (num_classes, image_size, channels, num_train, num_test, seed)

    def load_sources(self) -> Sources:
        num_classes, size, channels, num_train, num_test, seed = self.spec
        return Sources(
            train=synthetic_images(num_train, num_classes, size, channels, seed),
            test=synthetic_images(num_test, num_classes, size, channels, seed + 1),
        )


class CIFAR10DataModule(LabelBudgetDataModule):
    """CIFAR-10 from ``root`` (the python version, extracted); never downloaded at run time.

    Args:
        root: folder holding ``cifar-10-batches-py/`` (or its files directly).
    """

    num_cifar_classes = 10

    def __init__(self, root: str = "data", **kwargs):
        super().__init__(**kwargs)
        self.root = root

    def load_sources(self) -> Sources:
        train, test = cifar_sources(self.root, self.num_cifar_classes)
        return Sources(train=train, test=test)


class CIFAR100DataModule(CIFAR10DataModule):
    """CIFAR-100 (fine labels) from ``root`` holding ``cifar-100-python/``."""

    num_cifar_classes = 100


class STL10DataModule(LabelBudgetDataModule):
    """STL-10: 5k labeled train, 8k test and its real 100k unlabeled split (read lazily).

    Args:
        root: folder holding ``stl10_binary/`` (or its files directly).
        use_unlabeled_split: add the 100k unlabeled images to the unlabeled set.
    """

    def __init__(self, root: str = "data", use_unlabeled_split: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.root = root
        self.use_unlabeled_split = use_unlabeled_split

    def load_sources(self) -> Sources:
        train, test, unlabeled = stl10_sources(self.root)
        return Sources(train=train, test=test, extra_unlabeled=unlabeled if self.use_unlabeled_split else None)


class ImageFolderDataModule(LabelBudgetDataModule):
    """Your own images: ``root/<class>/<image>``, optional ``unlabeled_root`` of loose images.

    Args:
        root: labeled train folder, one sub-folder per class.
        test_root: labeled test folder in the same layout (default: a stratified 20% of root).
        unlabeled_root: folder of unlabeled images (any nesting).
        image_size: images are resized to this square side.
        channels: 3 (RGB) or 1 (grey).
        skip_corrupt: skip undecodable image files (a warning names each; the next image stands in)
            instead of stopping with a message naming the file.
        cache_decoded_mb: at fit, decode the train and unlabeled images once (after the resize) and
            keep them in memory as uint8 when they take at most this many MB, so that no step decodes
            an image file (the log says how many MB, or why not); 0 turns it off.
    """

    def __init__(
        self,
        root: str,
        test_root: str | None = None,
        unlabeled_root: str | None = None,
        image_size: int = 64,
        channels: int = 3,
        skip_corrupt: bool = False,
        cache_decoded_mb: float = 2048,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if cache_decoded_mb < 0:
            raise UserError(f"cache_decoded_mb={cache_decoded_mb} is not valid: use 0 (off) or a size in MB")
        self.root, self.test_root, self.unlabeled_root = root, test_root, unlabeled_root
        self.skip_corrupt = skip_corrupt
        self.cache_decoded_mb = cache_decoded_mb
        self.size, self.channels = image_size, channels

    def load_sources(self) -> Sources:
        from lit_effdl.data.splits import stratified_take

        train = image_folder_source(self.root, self.size, self.channels, self.skip_corrupt)
        if self.test_root:
            test = image_folder_source(self.test_root, self.size, self.channels, self.skip_corrupt)
        else:
            test_idx, train_idx = stratified_take(train.targets, fraction=0.2, seed=0)
            train, test = SubsetSource(train, train_idx), SubsetSource(train, test_idx)
        extra = (
            loose_images_source(self.unlabeled_root, train.classes, self.size, self.channels, self.skip_corrupt)
            if self.unlabeled_root
            else None
        )
        return Sources(train=train, test=test, extra_unlabeled=extra)

    @property
    def image_size(self) -> int:
        return self.size

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", None):  # the images every epoch reads again
            self.cache_decoded()
        super().setup(stage)

    def cache_decoded(self) -> None:
        """Decode the train folder and the unlabeled folder once into memory, if they fit under
        ``cache_decoded_mb`` (a ``test_root``, read once per test, stays read on demand)."""
        files = [f for f in (self.sources.train, self.sources.extra_unlabeled) if f is not None]
        files = [f.source if isinstance(f, SubsetSource) else f for f in files]  # a carved split: its folder
        if all(f.decoded is not None for f in files):
            return
        size_mb = sum(f.decoded_bytes() for f in files) / 2**20
        count = sum(len(f) for f in files)
        if not self.cache_decoded_mb:
            rank_zero_info(f"{count} images not cached in memory (cache_decoded_mb=0): each step decodes its files")
        elif size_mb > self.cache_decoded_mb:
            rank_zero_warn(f"{count} images not cached in memory: decoded they take {size_mb:.4g} MB, over "
                           f"data.cache_decoded_mb={self.cache_decoded_mb:g}; each step decodes its files "
                           "(raise cache_decoded_mb, or set data.num_workers to decode in parallel)")
        else:
            for f in files:
                f.decode_all()
            rank_zero_info(f"{count} images decoded once and cached in memory: {size_mb:.4g} MB")
