"""Each data source on tiny data in the real on-disk formats."""

import numpy as np
import pytest
import torch
from torchvision.io import write_png

from lit_effdl.data import CIFAR10DataModule, CIFAR100DataModule, DigitsDataModule  # noqa: I001
from lit_effdl.data import ImageFolderDataModule, STL10DataModule, SyntheticDataModule
from lit_effdl.errors import UserError
from tiny_data import make_tiny_cifar10, make_tiny_stl10, write_pickle


def test_digits_shapes_and_fixed_test_split():
    dm = DigitsDataModule(channels=3, image_size=32)
    train, test = dm.sources.train, dm.sources.test
    assert train.load(0).shape == (3, 32, 32) and train.load(0).dtype == torch.uint8
    assert len(train) + len(test) == 1797
    assert abs(len(test) - 0.2 * 1797) < 10
    assert dm.num_classes == 10 and dm.num_channels == 3
    again = DigitsDataModule(channels=3)
    assert np.array_equal(again.sources.test.targets, test.targets)


def test_synthetic_any_size_and_classes():
    dm = SyntheticDataModule(num_classes=7, image_size=24, channels=1, num_train=70, num_test=14)
    assert dm.num_classes == 7 and dm.image_size == 24 and dm.num_channels == 1
    assert np.bincount(dm.sources.train.targets).tolist() == [10] * 7


def test_cifar10_real_format(tmp_path):
    dm = CIFAR10DataModule(root=str(make_tiny_cifar10(tmp_path)), num_labels_per_class=2, val_fraction=0.1)
    dm.setup()
    assert len(dm.sources.train) == 100 and len(dm.sources.test) == 20
    assert dm.sources.train.load(3).shape == (3, 32, 32)
    assert dm.class_names[:2] == ["c0", "c1"]
    assert len(dm.labeled_source) == 20


def test_cifar100_real_format(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, n in (("train", 200), ("test", 100)):
        write_pickle(folder / name, {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                                     b"fine_labels": [i % 100 for i in range(n)]})
    write_pickle(folder / "meta", {b"fine_label_names": [f"f{i}".encode() for i in range(100)]})
    dm = CIFAR100DataModule(root=str(tmp_path))
    assert dm.num_classes == 100 and len(dm.sources.train) == 200


def test_stl10_real_format_with_unlabeled_split(tmp_path):
    images = make_tiny_stl10(tmp_path)
    dm = STL10DataModule(root=str(tmp_path), num_labels_per_class=1, val_fraction=0.0)
    dm.setup()
    assert torch.equal(dm.sources.train.load(4), torch.from_numpy(images[4]))
    assert dm.sources.train.targets[:3].tolist() == [0, 1, 2]
    assert len(dm.unlabeled_source) == 10 + 7  # train leftovers + the unlabeled split
    assert dm.unlabeled_source.targets[-1] == -1


def _write_folder(root, classes=("cat", "dog"), per_class=5, size=20):
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            write_png(torch.full((3, size, size), 40 * k + i, dtype=torch.uint8), str(root / name / f"{i}.png"))


def test_image_folder_with_unlabeled_root(tmp_path):
    _write_folder(tmp_path / "train")
    (tmp_path / "loose" / "sub").mkdir(parents=True)
    for i in range(3):
        write_png(torch.zeros(3, 30, 30, dtype=torch.uint8), str(tmp_path / "loose" / "sub" / f"{i}.png"))
    dm = ImageFolderDataModule(root=str(tmp_path / "train"), unlabeled_root=str(tmp_path / "loose"),
                               image_size=16, val_fraction=0.0)
    dm.setup()
    assert dm.class_names == ["cat", "dog"] and dm.image_size == 16
    assert dm.sources.train.load(0).shape == (3, 16, 16)
    assert len(dm.unlabeled_source) == 3 and dm.unlabeled_source.load(2).shape == (3, 16, 16)


def test_empty_unlabeled_folder_is_refused(tmp_path):
    _write_folder(tmp_path / "train")
    (tmp_path / "empty").mkdir()
    dm = ImageFolderDataModule(root=str(tmp_path / "train"), unlabeled_root=str(tmp_path / "empty"))
    with pytest.raises(UserError, match=r"unlabeled folder .*empty holds no images"):
        dm.sources


def test_corrupted_image_names_its_file(tmp_path):
    _write_folder(tmp_path / "train")
    (tmp_path / "train" / "cat" / "0.png").write_bytes(b"not a png")
    dm = ImageFolderDataModule(root=str(tmp_path / "train"), test_root=str(tmp_path / "train"))
    with pytest.raises(UserError, match=r"cat/0\.png"):
        dm.sources.train.load(0)


@pytest.mark.parametrize("module, files", [(CIFAR10DataModule, "data_batch_1"), (STL10DataModule, "unlabeled_X.bin")])
def test_missing_dataset_offline_names_folder_and_files(tmp_path, module, files):
    with pytest.raises(UserError, match=rf"not found in {tmp_path}.*{files}.*nothing is downloaded"):
        module(root=str(tmp_path)).sources


def test_skip_corrupt_skips_and_counts(tmp_path):
    _write_folder(tmp_path / "train")
    (tmp_path / "train" / "cat" / "0.png").write_bytes(b"not a png")
    dm = ImageFolderDataModule(root=str(tmp_path / "train"), test_root=str(tmp_path / "train"), skip_corrupt=True)
    with pytest.warns(UserWarning, match=r"cat/0\.png"):
        image = dm.sources.train.load(0)
    assert image.shape == (3, 64, 64)
    assert dm.sources.train.skipped == {str(tmp_path / "train" / "cat" / "0.png")}
