"""RandAugment(N, M): N ops drawn uniformly (with replacement) per image, each at magnitude M.

An image's geometric ops (rotate, shear, translate) compose into **one** affine map sampled once
(one resampling; pixels whose source falls outside become ``fill``), then its colour ops run in the
drawn order. Both the per-image and the batched path do this, so they draw from one distribution.

Magnitudes use the paper's (and torchvision's) **0..30 scale**: ``rand-n2-m9`` here is
``torchvision.transforms.v2.RandAugment(num_ops=2, magnitude=9)``'s strength, while timm's
``rand-m9`` is on a 0..10 scale (``m9`` there is about ``m27`` here). Magnitude 0 is the identity for
every op that has a magnitude. ``magnitude_std`` adds Gaussian noise to M at each draw (timm's
``mstd``), clipped to 0..30. Brightness is the product's **additive** brightness (a constant clipped
to the valid range), not PIL's multiplicative one. Geometric ops fill uncovered pixels with ``fill``.

Magnitude -> parameter at M = 30 (linear in M, signed ops get a random sign):
rotate 30 degrees, shear 0.3, translate 0.45 of the side, brightness +-0.5 of the range,
color / contrast / sharpness factor 1 +- 0.9, solarize threshold 1 - M/30 of the range,
posterize keeps 8 - round(4 M / 30) bits.
"""

from __future__ import annotations

import math

import torch

from lit_effdl.augment import ops
from lit_effdl.augment.warp import compose_terms, warp_terms
from lit_effdl.errors import UserError

MAX_MAGNITUDE = 30.0

# name: (kind, signed, value at magnitude 30); kind "geom" ops become pixel matrices.
OP_TABLE: dict[str, tuple[str, bool, float]] = {
    "identity": ("color", False, 0.0),
    "autocontrast": ("color", False, 0.0),
    "equalize": ("color", False, 0.0),
    "rotate": ("geom", True, 30.0),
    "solarize": ("color", False, 1.0),
    "color": ("color", True, 0.9),
    "posterize": ("color", False, 4.0),
    "contrast": ("color", True, 0.9),
    "brightness": ("color", True, 0.5),
    "sharpness": ("color", True, 0.9),
    "shear_x": ("geom", True, 0.3),
    "shear_y": ("geom", True, 0.3),
    "translate_x": ("geom", True, 0.45),
    "translate_y": ("geom", True, 0.45),
}
RA_OPS: tuple[str, ...] = tuple(OP_TABLE)
_FACTOR_OPS = ("color", "contrast", "sharpness")


def op_param(name: str, magnitude: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """The op's parameter for magnitudes (B,) on the 0..30 scale and signs (B,) in {-1, +1}."""
    kind, signed, top = OP_TABLE[name]
    value = magnitude / MAX_MAGNITUDE * top
    if signed:
        value = value * sign
    if name in _FACTOR_OPS:
        return 1.0 + value
    if name == "solarize":
        return 1.0 - value  # threshold as a fraction of the range; 1 = nothing inverted
    return value


_GEOM_ARGS = {"rotate": "degrees", "shear_x": "shear_x", "shear_y": "shear_y", "translate_x": "tx",
              "translate_y": "ty"}


def _affine_args(params: dict, h: int, w: int) -> dict:
    """RandAugment's geometric parameters ``{op name: (B,) values or a float}`` as
    :func:`ops.affine_terms` arguments (translations from fractions of the side to pixels)."""
    scale = {"translate_x": w, "translate_y": h}
    return {_GEOM_ARGS[name]: value * scale.get(name, 1) for name, value in params.items()}


def geom_terms(params: dict, h: int, w: int) -> tuple:
    """The forward map of geometric op parameters taken together (each sample of a RandAugment slot
    drew one op: the others are zero), as :func:`ops.affine_terms` (floats: the per-image path)."""
    return ops.affine_terms(h, w, **_affine_args(params, h, w))


def geom_matrix(params: dict[str, torch.Tensor], h: int, w: int) -> torch.Tensor:
    """(B, 3, 3) matrices of :func:`geom_terms` for (B,) tensor parameters (the batched path)."""
    return ops.affine_matrix(h, w, **_affine_args(params, h, w))


def check_ops(names) -> tuple[str, ...]:
    """Validated op names (``UserError`` naming an unknown one)."""
    for name in names:
        if name not in OP_TABLE:
            raise UserError(f"unknown RandAugment op '{name}': valid ops are {', '.join(RA_OPS)}")
    return tuple(names)


def draw_ops(batch: int, num_ops: int, magnitude: float, magnitude_std: float, n_choices: int,
             device=None, generator: torch.Generator | None = None):
    """Per-sample draws: op indices (B, N), magnitudes (B, N) and signs (B, N)."""
    idx = torch.randint(n_choices, (batch, num_ops), device=device, generator=generator)
    sign = torch.randint(2, (batch, num_ops), device=device, generator=generator).float() * 2 - 1
    mag = torch.full((batch, num_ops), float(magnitude), device=device)
    if magnitude_std > 0:
        noise = torch.randn((batch, num_ops), device=device, generator=generator)
        mag = (mag + magnitude_std * noise).clamp_(0, MAX_MAGNITUDE)
    return idx, mag, sign


class RandAugment:
    """Per-image RandAugment on uint8 (C, H, W) or float images; ops applied in the drawn order.

    Args:
        num_ops: N, ops per image (drawn with replacement, identity included as in the paper).
        magnitude: M on the 0..30 scale.
        magnitude_std: std of Gaussian noise added to M at each draw (0: fixed M).
        ops: the op list (default: the 14 ops of ``RA_OPS``).
        fill: value of pixels uncovered by geometric ops, as a fraction of the range.
    """

    def __init__(self, num_ops: int = 2, magnitude: float = 9, magnitude_std: float = 0.0,
                 ops: tuple[str, ...] | None = None, fill: float = 0.0):
        if num_ops < 0:
            raise UserError(f"RandAugment num_ops={num_ops} is not valid: use 0 or more")
        ops_module_check(magnitude)
        self.num_ops, self.magnitude, self.magnitude_std = num_ops, float(magnitude), float(magnitude_std)
        self.ops = check_ops(ops or RA_OPS)
        self.fill = fill

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        x, peak, dtype, single = ops.to_work(img)
        return ops.from_work(self.work(x, peak), dtype, single)

    def work(self, x: torch.Tensor, peak: float) -> torch.Tensor:
        """On a float work batch (0..peak); one draw of ops for the whole call."""
        n, k_ops = self.num_ops, len(self.ops)
        u = torch.rand(2 * n).tolist()  # one RNG call, then Python floats
        noise = torch.randn(n).tolist() if self.magnitude_std > 0 else [0.0] * n
        drawn = []
        for k in range(n):
            name = self.ops[min(int(u[k] * k_ops), k_ops - 1)]
            mag = min(max(self.magnitude + self.magnitude_std * noise[k], 0.0), MAX_MAGNITUDE)
            drawn.append((name, op_param(name, mag, 1.0 if u[n + k] < 0.5 else -1.0)))
        composed = None  # the image's geometric ops composed into one map, as on the batched path
        for name, p in drawn:
            if OP_TABLE[name][0] == "geom":
                m = geom_terms({name: p}, *x.shape[-2:])
                composed = m if composed is None else compose_terms(m, composed)
        if composed is not None:
            x = warp_terms(x, composed, self.fill * peak)
        for name, p in drawn:
            if OP_TABLE[name][0] != "geom":
                x = ops.COLOR_OPS[name](x, p, peak)
        return x

    def __repr__(self) -> str:
        return f"RandAugment(num_ops={self.num_ops}, magnitude={self.magnitude}, std={self.magnitude_std})"


def ops_module_check(magnitude: float) -> None:
    ops.magnitude_check(float(magnitude), f"magnitude={magnitude}")
