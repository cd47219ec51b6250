#!/usr/bin/env python
"""Write a PNG grid of a config's augmentation: per view, a row of originals then augmented rows.

    python scripts/preview_augment.py --config configs/digits/supervised_strong.yaml --out grid.png
    python scripts/preview_augment.py --config configs/digits/supervised.yaml --spec rand-n3-m20 --out g.png

Views are the data module's training pipelines (labeled; weak and strong when it has an unlabeled
loader). ``--batched`` previews the on-device path instead of the per-image one.
"""

from __future__ import annotations

import argparse
import importlib
import sys

import torch
import yaml
from torchvision.io import write_png

from lit_effdl.augment.batched import build_batched
from lit_effdl.augment.preview import preview_grid, preview_images, view_pipelines
from lit_effdl.errors import UserError, exit_code_of


def load_datamodule(config: str):
    """The data module of a ``lit-effdl`` YAML config (``data.class_path`` + ``init_args``)."""
    with open(config) as f:
        data = (yaml.safe_load(f) or {}).get("data")
    if not data or "class_path" not in data:
        raise UserError(f"config '{config}' has no data.class_path: give a lit-effdl fit config")
    module, _, name = data["class_path"].rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    return cls(**(data.get("init_args") or {}))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--out", default="augment_preview.png")
    p.add_argument("--spec", default=None, help="preview this spec instead of the config's")
    p.add_argument("--num-images", type=int, default=8)
    p.add_argument("--rows", type=int, default=3)
    p.add_argument("--batched", action="store_true", help="the batched on-device path")
    p.add_argument("--seed", type=int, default=0)
    return exit_code_of("preview_augment", lambda: write_preview(p.parse_args(argv)))


def write_preview(args: argparse.Namespace) -> int:
    """One block of ``rows`` augmented copies per training view, stacked into one PNG."""
    torch.manual_seed(args.seed)
    dm = load_datamodule(args.config)
    images = preview_images(dm, args.num_images)
    blocks = []
    for view, (pipeline, _batched, spec) in view_pipelines(dm, spec=args.spec).items():
        if args.batched:
            pipeline = build_batched(spec)
        blocks.append(preview_grid(images, pipeline, args.rows, batched=args.batched))
        print(f"{view}: {spec}")
    width = max(b.shape[-1] for b in blocks)
    grid = torch.cat([torch.nn.functional.pad(b, (0, width - b.shape[-1]), value=255) for b in blocks], 1)
    write_png(grid, args.out)
    print(f"wrote {args.out} ({grid.shape[-1]}x{grid.shape[-2]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
