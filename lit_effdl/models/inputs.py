"""Input normalisation, one function for training, evaluation and loaded teachers."""

from __future__ import annotations

from typing import Sequence

import torch


def normalise_images(images: torch.Tensor, mean: torch.Tensor | Sequence[float],
                     std: torch.Tensor | Sequence[float]) -> torch.Tensor:
    """uint8 (0..255) or float (0..1) images -> ``(x - mean) / std`` as float32.

    ``mean`` / ``std``: per-channel tensors shaped ``(1, C, 1, 1)``, or sequences of C values (one
    value is broadcast over the channels).
    """
    x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
    return (x - _per_channel(mean, x)) / _per_channel(std, x)


def _per_channel(values: torch.Tensor | Sequence[float], like: torch.Tensor) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values
    return torch.tensor(values, dtype=torch.float32, device=like.device).view(1, -1, 1, 1)
