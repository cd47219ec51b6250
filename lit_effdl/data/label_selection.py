"""``selection.csv``: the images a selection chose, written by ``lit-effdl select`` and read by
``label_selection: file``.

Columns ``index, path, score, cluster``. ``index`` is the image's position in the data module's
training pool (``sources.train``: the train split *before* validation is carved from it);
``path`` (image folders only) is its file, relative to the data module's ``root``: when a row has a
path, the path decides (it survives a reordering of the folder), else the index.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lit_effdl.data.sources import FileImages, ImageSource, SubsetSource
from lit_effdl.errors import UserError
from lit_effdl.io import write_text_atomic

COLUMNS = ("index", "path", "score", "cluster")


def pool_paths(source: ImageSource) -> list[str] | None:
    """Each pool image's file path (None when the images are not files)."""
    base = source.source if isinstance(source, SubsetSource) else source
    return [source.describe(i) for i in range(len(source))] if isinstance(base, FileImages) else None


def _key(path: str, root: str | None) -> str:
    return os.path.normcase(os.path.abspath(os.path.join(root or "", os.path.expanduser(path))))


def write_selection_csv(path: str | Path, indices: Sequence[int], scores: Sequence[float], clusters: Sequence[int],
                        paths: list[str] | None = None, root: str | None = None) -> None:
    """Write the chosen rows, in choice order, atomically; ``paths``: the whole pool's files (written
    relative to ``root``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for i, score, cluster in zip(indices, scores, clusters):
        file = "" if paths is None else Path(os.path.relpath(paths[i], root) if root else paths[i]).as_posix()
        writer.writerow([int(i), file, f"{float(score):.6g}", int(cluster)])
    write_text_atomic(path, buffer.getvalue())


def read_selected(files: str | Sequence[str], pool_size: int, paths: list[str] | None = None,
                  root: str | None = None) -> np.ndarray:
    """Pool positions listed by one or more selection CSVs, in file order; unknown or repeated
    indices / paths are a ``UserError`` naming them."""
    files = [files] if isinstance(files, (str, Path)) else list(files)
    by_path = {_key(p, None): i for i, p in enumerate(paths)} if paths is not None else None
    chosen: list[int] = []
    for file in files:
        rows = _rows(file)
        for line, row in enumerate(rows, start=2):
            chosen.append(_position(row, file, line, pool_size, by_path, root))
    values, counts = np.unique(np.asarray(chosen, dtype=np.int64), return_counts=True)
    if (counts > 1).any():
        twice = values[counts > 1][:5].tolist()
        raise UserError(f"selection file(s) {', '.join(map(str, files))} list pool indices {twice} more than once: "
                        "each image may be selected once")
    return np.asarray(chosen, dtype=np.int64)


def _rows(file: str | Path) -> list[dict[str, str]]:
    try:
        with open(Path(file).expanduser(), newline="") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            fields = reader.fieldnames or []
    except OSError as err:
        raise UserError(f"cannot read selection file {file}: {err.strerror or err}") from None
    if "index" not in fields and "path" not in fields:
        raise UserError(f"selection file {file} has no 'index' or 'path' column (columns: {fields}): "
                        f"give a selection.csv written by lit-effdl select ({', '.join(COLUMNS)})")
    if not rows:
        raise UserError(f"selection file {file} lists no images")
    return rows


def _position(row: dict[str, str], file, line: int, pool_size: int, by_path: dict[str, int] | None,
              root: str | None) -> int:
    path = (row.get("path") or "").strip()
    if path and by_path is not None:
        if _key(path, root) not in by_path:
            raise UserError(f"selection file {file} line {line}: path '{path}' is not in the training pool "
                            f"({pool_size} images under {root or 'the data folders'})")
        return by_path[_key(path, root)]
    value = (row.get("index") or "").strip()
    try:
        index = int(value)
    except ValueError:
        raise UserError(f"selection file {file} line {line}: index '{value}' is not valid: "
                        f"use a pool position in 0..{pool_size - 1}") from None
    if not 0 <= index < pool_size:
        raise UserError(f"selection file {file} line {line}: index {index} is not in the training pool: "
                        f"use 0..{pool_size - 1}")
    return index
