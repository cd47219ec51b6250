"""Augmentation pipelines from spec strings usable in YAML and on the command line.

A spec is ``+``-joined tokens applied left to right to a uint8 ``(C, H, W)`` tensor:
``none``, ``flip`` (horizontal), ``crop`` (pad by size/8 with reflection, random crop back),
``rand-nN-mM`` (RandAugment, N ops at magnitude M on torchvision's 0..30 scale), ``cutout``.
Presets: ``weak`` = ``flip+crop``; ``strong`` = ``flip+crop+rand-n2-m10+cutout`` (FixMatch).
"""

from __future__ import annotations

import re
from typing import Callable

import torch
from torchvision.transforms import v2

from lit_effdl.errors import UserError

PRESETS = {
    "weak": "flip+crop",
    "strong": "flip+crop+rand-n2-m10+cutout",
    "weak_noflip": "crop",
    "strong_noflip": "crop+rand-n2-m10+cutout",
}
_RAND = re.compile(r"^rand-n(\d+)-m(\d+)$")
TOKENS = ("none", "flip", "crop", "rand-nN-mM", "cutout")


def _token_transform(token: str, image_size: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
    if token == "none":
        return None
    if token == "flip":
        return v2.RandomHorizontalFlip()
    if token == "crop":
        return v2.RandomCrop(image_size, padding=max(1, image_size // 8), padding_mode="reflect")
    if token == "cutout":
        return v2.RandomErasing(p=1.0, scale=(0.02, 0.25), ratio=(0.5, 2.0), value=127)
    match = _RAND.match(token)
    if match:
        n, m = int(match.group(1)), int(match.group(2))
        if not 0 <= m <= 30:
            raise UserError(f"RandAugment magnitude m{m} in '{token}' is out of range: use 0..30")
        return v2.RandAugment(num_ops=n, magnitude=m)
    raise UserError(f"unknown augmentation '{token}': valid tokens are {', '.join(TOKENS)} "
                    f"and presets {', '.join(PRESETS)}, joined with '+'")


def expand_spec(spec: str) -> list[str]:
    """Presets replaced by their tokens, whitespace removed."""
    tokens: list[str] = []
    for token in spec.replace(" ", "").split("+"):
        tokens += PRESETS[token].split("+") if token in PRESETS else [token]
    return [t for t in tokens if t]


def build_pipeline(spec: str | None, image_size: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The transform for ``spec`` on images of ``image_size``; ``None`` when it does nothing."""
    if spec is None:
        return None
    steps = [t for t in (_token_transform(tok, image_size) for tok in expand_spec(spec)) if t is not None]
    if not steps:
        return None
    return steps[0] if len(steps) == 1 else v2.Compose(steps)


def is_random_spec(spec: str | None) -> bool:
    """Whether the pipeline draws random numbers (caches of model outputs are then invalid)."""
    return spec is not None and any(t != "none" for t in expand_spec(spec))
