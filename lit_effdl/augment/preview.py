"""Preview grids: a row of original images, then rows of their augmented versions."""

from __future__ import annotations

from typing import Callable

import torch
from torchvision.utils import make_grid

from lit_effdl.augment.batched import VIEW_SPECS, BatchedPipeline, build_batched
from lit_effdl.augment.pipelines import build_pipeline


def preview_grid(images: torch.Tensor, pipeline: Callable | None, rows: int = 3, batched: bool = False,
                 pad: int = 2) -> torch.Tensor:
    """uint8 (3, H', W') grid: ``images`` (K, C, H, W) on the first row, ``rows`` augmented rows below.

    ``batched=True`` calls ``pipeline`` once per row on the whole batch (the on-device path).
    """
    out = [images]
    for _ in range(rows):
        if pipeline is None:
            out.append(images)
        elif batched:
            out.append(pipeline(images))
        else:
            out.append(torch.stack([pipeline(img) for img in images]))
    tiles = torch.cat(out).float() / 255.0
    if tiles.shape[1] == 1:
        tiles = tiles.expand(-1, 3, -1, -1)
    grid = make_grid(tiles, nrow=images.shape[0], padding=pad, pad_value=1.0)
    return (grid * 255).round().to(torch.uint8)


def datamodule_specs(datamodule) -> dict[str, str]:
    """The augmentation specs a data module uses in training, by view (weak / strong only with an
    unlabeled loader)."""
    views = ["labeled"] + (["weak", "strong"] if getattr(datamodule, "unlabeled_ratio", 0) else [])
    specs = {v: getattr(datamodule, VIEW_SPECS[v], None) for v in views}
    return {v: s for v, s in specs.items() if s is not None}


def preview_images(datamodule, num_images: int = 8) -> torch.Tensor:
    """The first ``num_images`` labeled training images (un-augmented uint8), set up if needed."""
    if getattr(datamodule, "split", None) is None:
        datamodule.setup("fit")
    source = datamodule.labeled_source
    n = min(num_images, len(source))
    return torch.stack([source.load(i) for i in range(n)])


def view_pipelines(datamodule, device_pipelines: dict[str, BatchedPipeline] | None = None,
                   spec: str | None = None) -> dict[str, tuple[Callable | None, bool, str]]:
    """``view -> (pipeline, batched, spec)`` for the preview: the device pipelines when the method
    took them, else the data module's per-image pipelines (``spec`` overrides every view)."""
    size = int(preview_images(datamodule, 1).shape[-1])
    if spec is not None:
        return {"spec": (build_pipeline(spec, size), False, spec)}
    if device_pipelines:
        used = datamodule_specs(datamodule)
        return {v: (p, True, p.spec) for v, p in device_pipelines.items() if v in used}
    return {v: (build_pipeline(s, size), False, s) for v, s in datamodule_specs(datamodule).items()}


__all__ = ["preview_grid", "datamodule_specs", "preview_images", "view_pipelines", "build_batched"]
