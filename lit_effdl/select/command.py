"""``lit-effdl select``: which images of the training pool to label next.

    lit-effdl select --config configs/mnist/fixmatch.yaml --strategy typiclust --budget 10 --out sel/
    lit-effdl select --config C --ckpt_path run/checkpoints/last.ckpt --strategy margin --budget 20 \\
        --labeled sel/selection.csv --out sel2/          # the next batch, after training on the first

The data come from the config's ``data`` section (``--data.init_args.X V`` overrides it); the pool is
its training split before validation is carved (``lit_effdl.data.label_selection``). Writes
``OUT/selection.csv`` (index, path, score, cluster; in choice order) and ``OUT/selection.png``, the
chosen images left to right, top to bottom in that order; the last stdout line is JSON. Train on the
choice with ``--data.init_args.label_selection file --data.init_args.label_selection_file OUT/selection.csv``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

from lit_effdl.data.label_selection import pool_paths, read_selected, write_selection_csv
from lit_effdl.data.sources import ImageSource
from lit_effdl.errors import UserError, exit_code_of
from lit_effdl.io import atomic_path
from lit_effdl.select import STRATEGIES, needs, run_strategy
from lit_effdl.select.embed import PCA_DIMS, network_outputs, pixel_embeddings, whiten

SELECTION_FILE = "selection.csv"
CONTACT_SHEET = "selection.png"
MIN_TILE = 64  # smaller images are enlarged (nearest neighbour) on the contact sheet


def data_module(config: str, overrides: list[str]):
    """The config's data module (its ``data`` section, ``--data.*`` overrides applied), not set up."""
    import yaml
    from jsonargparse import ArgumentParser

    from lit_effdl.data import LabelBudgetDataModule

    try:
        section = (yaml.safe_load(Path(config).read_text()) or {}).get("data")
    except (OSError, yaml.YAMLError) as err:
        raise UserError(f"cannot read config {config}: {err}") from None
    if not section:
        raise UserError(f"config {config} has no data section: give a lit-effdl fit config")
    parser = ArgumentParser(prog="lit-effdl select", exit_on_error=False)
    parser.add_subclass_arguments(LabelBudgetDataModule, "data")
    try:
        return parser.instantiate(parser.parse_args(["--data", yaml.safe_dump(section), *overrides])).data
    except Exception as err:  # jsonargparse wraps the data module's own UserError
        from lit_effdl.cli import user_error_in

        raise (user_error_in(err) or UserError(f"config {config}: {str(err).splitlines()[0]}")) from None


def contact_sheet(pool: ImageSource, indices: np.ndarray, path: str | Path) -> None:
    """The chosen images as one PNG grid, in choice order (written atomically)."""
    from torchvision.utils import make_grid, save_image

    images = torch.stack([pool.load(int(i)) for i in indices]).float() / 255.0
    scale = math.ceil(MIN_TILE / images.shape[-1])
    if scale > 1:
        images = torch.nn.functional.interpolate(images, scale_factor=scale, mode="nearest")
    grid = make_grid(images, nrow=math.ceil(math.sqrt(len(images))), padding=4, pad_value=1.0)
    with atomic_path(path) as tmp:
        save_image(grid, tmp, format="png")


_last_embedded: dict = {}  # {key: values} of the last pool embedded in this process (one entry at most)


def _embedded(dm, kind: str, ckpt_path: str | None, pca_dims: int, seed: int, key: tuple) -> np.ndarray:
    """The pool's embeddings / probabilities, reused while ``key`` (config, overrides, checkpoint and
    its file time, PCA settings) is unchanged: a demo selects many times from one pool."""
    checkpoint = Path(ckpt_path) if ckpt_path else None
    key = (*key, kind, ckpt_path, checkpoint.stat().st_mtime_ns if checkpoint and checkpoint.is_file() else None,
           None if ckpt_path else (pca_dims, seed))
    if key not in _last_embedded:
        loading = dict(batch_size=dm.eval_batch_size, num_workers=dm.num_workers)
        values = (network_outputs(ckpt_path, dm.sources.train, dm.image_size, kind, **loading) if ckpt_path
                  else pixel_embeddings(dm.sources.train, pca_dims, seed, **loading))
        _last_embedded.clear()
        _last_embedded[key] = values
    return _last_embedded[key]


def select(config: str, strategy: str, budget: int, out: str | Path, ckpt_path: str | None = None,
           labeled: list[str] | None = None, seed: int = 0, pca_dims: int = PCA_DIMS,
           overrides: list[str] | None = None, whiten_dims: int | None = None) -> dict:
    """Run ``strategy`` on the config's training pool, write ``selection.csv`` and ``selection.png``
    under ``out``; returns what the command prints as JSON."""
    kind = needs(strategy)
    if kind == "probabilities" and not ckpt_path:
        raise UserError(f"strategy '{strategy}' ranks a model's predictions: give --ckpt_path "
                        "(a trained run's checkpoint)")
    dm = data_module(config, overrides or [])
    pool, root = dm.sources.train, getattr(dm, "root", None)
    paths = pool_paths(pool)
    already = read_selected(labeled, len(pool), paths, root) if labeled else np.zeros(0, dtype=np.int64)
    if kind == "nothing":
        values = len(pool)
    else:
        values = _embedded(dm, kind, ckpt_path, pca_dims, seed, (config, tuple(overrides or [])))
        if whiten_dims is not None and kind == "embeddings":
            values = whiten(values, whiten_dims, seed)
    options = {"num_classes": dm.num_classes} if strategy == "probcover" else {}
    chosen = run_strategy(strategy, values, budget, already, seed, **options)
    out = Path(out)
    write_selection_csv(out / SELECTION_FILE, chosen.indices, chosen.scores, chosen.clusters, paths, root)
    contact_sheet(pool, chosen.indices, out / CONTACT_SHEET)
    return {"selection": str(out / SELECTION_FILE), "contact_sheet": str(out / CONTACT_SHEET), "strategy": strategy,
            "budget": budget, "pool": len(pool), "already_labeled": len(already),
            "embedding": "none" if kind == "nothing" else (ckpt_path or f"pixels+pca{pca_dims}")
            + (f" whitened to {whiten_dims}" if whiten_dims is not None and kind == "embeddings" else ""),
            "indices": chosen.indices.tolist(), "info": chosen.info}


def main(argv: list[str] | None = None) -> int:
    """``lit-effdl select``; bad input ends with one line on stderr and exit code 2."""
    parser = argparse.ArgumentParser(prog="lit-effdl select", description=__doc__.split("\n\n")[0],
                                     epilog="Any --data.init_args.NAME VALUE overrides the config's data.")
    parser.add_argument("--config", required=True, help="a lit-effdl fit config (its data section is used)")
    parser.add_argument("--strategy", required=True, choices=list(STRATEGIES))
    parser.add_argument("--budget", required=True, type=int, help="how many images to choose")
    parser.add_argument("--out", required=True, help="folder for selection.csv and selection.png")
    parser.add_argument("--ckpt_path", help="embedding network: a lit-effdl checkpoint (default: pixels + PCA)")
    parser.add_argument("--labeled", nargs="+", help="earlier selection.csv files: the images already labeled")
    parser.add_argument("--seed", type=int, default=0, help="seed of k-means and random draws")
    parser.add_argument("--pca_dims", type=int, default=PCA_DIMS, help="PCA dimensions of pixels without --ckpt_path")
    parser.add_argument("--whiten_dims", type=int, help="PCA-whiten the embeddings to this many dimensions "
                        "before ranking (e.g. 32 for self-supervised features; default: as they are)")
    args, overrides = parser.parse_known_args(argv)
    unknown = [a for a in overrides if a.startswith("--") and not a.startswith("--data.")]
    if unknown:
        parser.error(f"unrecognised arguments: {' '.join(unknown)}")

    def run() -> int:
        result = select(args.config, args.strategy, args.budget, args.out, args.ckpt_path, args.labeled, args.seed,
                        args.pca_dims, overrides, args.whiten_dims)
        print(f"{args.strategy}: {len(result['indices'])} of {result['pool']} images -> {result['selection']}, "
              f"{result['contact_sheet']}")
        print(json.dumps(result))
        return 0

    return exit_code_of("lit-effdl select", run)
