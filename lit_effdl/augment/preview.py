"""Preview grids: a row of original images, then rows of their augmented versions."""

from __future__ import annotations

from typing import Callable

import torch
from torchvision.utils import make_grid

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
    views = ["labeled"] + (["weak", "strong"] if datamodule.unlabeled_ratio else [])
    specs = datamodule.train_specs()
    return {v: specs[v] for v in views if specs.get(v) is not None}


def preview_images(datamodule, num_images: int = 8) -> torch.Tensor:
    """The first ``num_images`` labeled training images (un-augmented uint8), set up if needed."""
    if datamodule.split is None:
        datamodule.setup("fit")
    images = datamodule.inference_dataset("labeled")
    return torch.stack([images[i]["image"] for i in range(min(num_images, len(images)))])


def view_pipelines(datamodule, spec: str | None = None) -> dict[str, tuple[Callable | None, bool, str]]:
    """``view -> (pipeline, batched, spec)`` for the preview: the data module's batched pipelines
    with ``augment_on="device"``, else its per-image ones (``spec`` overrides every view)."""
    size = int(preview_images(datamodule, 1).shape[-1])
    if spec is not None:
        return {"spec": (build_pipeline(spec, size), False, spec)}
    if datamodule.augment_on == "device":
        device = datamodule.device_pipelines()
        return {v: (device.get(v), True, s) for v, s in datamodule_specs(datamodule).items()}
    return {v: (build_pipeline(s, size), False, s) for v, s in datamodule_specs(datamodule).items()}


__all__ = ["preview_grid", "datamodule_specs", "preview_images", "view_pipelines"]
