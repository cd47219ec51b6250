"""Data: sources, label-budget splits, views and the data modules built from them."""

from lit_effdl.data.datamodule import LabelBudgetDataModule, Sources
from lit_effdl.data.mnist import MNISTDataModule
from lit_effdl.data.modules import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    DigitsDataModule,
    ImageFolderDataModule,
    STL10DataModule,
    SyntheticDataModule,
)

__all__ = [
    "LabelBudgetDataModule", "Sources", "DigitsDataModule", "SyntheticDataModule",
    "CIFAR10DataModule", "CIFAR100DataModule", "STL10DataModule", "ImageFolderDataModule", "MNISTDataModule",
]
