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


def _write_random_folder(root, size, classes=("cat", "dog"), per_class=5, loose=3):
    """Class folders and a folder of loose images of random pixels (so a resize changes them)."""
    gen = torch.Generator().manual_seed(0)
    for name in classes:
        (root / "train" / name).mkdir(parents=True)
        for i in range(per_class):
            write_png(torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=gen),
                      str(root / "train" / name / f"{i}.png"))
    (root / "loose").mkdir()
    for i in range(loose):
        write_png(torch.randint(0, 256, (3, size + 7, size), dtype=torch.uint8, generator=gen), str(root / "loose" / f"{i}.png"))


def _folder_module(root, **kwargs):
    return ImageFolderDataModule(root=str(root / "train"), unlabeled_root=str(root / "loose"), image_size=16,
                                 num_labels_per_class=2, val_fraction=0.2, **kwargs)


def test_cached_images_are_pixel_equal_to_decoded_ones_and_read_no_file(tmp_path, caplog):
    _write_random_folder(tmp_path, size=20)
    cached, decoding = _folder_module(tmp_path), _folder_module(tmp_path, cache_decoded_mb=0)
    with caplog.at_level("INFO"):
        cached.setup("fit")
    decoding.setup("fit")
    assert "13 images decoded once and cached in memory" in caplog.text
    parts = {"labeled": "labeled_source", "unlabeled": "unlabeled_source", "val": "val_source"}
    sources = {name: (getattr(cached, attr), getattr(decoding, attr)) for name, attr in parts.items()}
    sources["test"] = (cached.sources.test, decoding.sources.test)  # carved from the cached folder
    expected = {name: [b.load(i) for i in range(len(b))] for name, (_, b) in sources.items()}
    for path in tmp_path.rglob("*.png"):
        path.unlink()  # from here on only the cache can give images
    for name, (a, _) in sources.items():
        assert len(a) == len(expected[name]) > 0
        assert all(torch.equal(a.load(i), image) for i, image in enumerate(expected[name])), name
    assert expected["unlabeled"][-1].shape == (3, 16, 16)  # resized (the loose files are 20 x 27)
    with pytest.raises(UserError, match="cannot decode"):
        decoding.unlabeled_source.load(0)


def test_cache_over_its_limit_falls_back_to_decoding_with_a_message(tmp_path):
    _write_random_folder(tmp_path, size=20)  # 13 images x 3 x 16 x 16 = 0.0095 MB decoded
    dm = _folder_module(tmp_path, cache_decoded_mb=0.005)
    with pytest.warns(UserWarning, match=r"13 images not cached in memory: .* over data\.cache_decoded_mb=0\.005"):
        dm.setup("fit")
    assert dm.sources.extra_unlabeled.decoded is None and dm.sources.train.source.decoded is None
    assert dm.unlabeled_source.load(0).shape == (3, 16, 16)  # read from its file
