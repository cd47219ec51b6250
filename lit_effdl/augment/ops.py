"""Augmentation ops on image tensors, shared by the per-image and the batched path.

Every op takes ``(C, H, W)`` or ``(B, C, H, W)`` images, uint8 (0..255) or float (0..1), and returns
the same dtype and shape. Parameters are floats or ``(B,)`` tensors (one value per sample), which is
what torchvision's v2 functionals lack (one scalar per call) and why the colour ops are written here:
the batched path needs per-sample factors, and both paths must run the same code to share one
distribution. Geometric ops are 3x3 pixel matrices (x right, y down, pixel centres at integers)
built by :func:`affine_matrix` and applied by :func:`lit_effdl.augment.warp.warp_work` (
nearest sampling, one ``gather`` per call), on both paths.
"""

from __future__ import annotations

import math

import torch
from torchvision.transforms.v2 import functional as TF

from lit_effdl.errors import UserError

Param = float | torch.Tensor


# ---------------------------------------------------------------- dtype handling
def to_work(img: torch.Tensor) -> tuple[torch.Tensor, float, torch.dtype, bool]:
    """Images as a float batch plus (peak value, original dtype, was-single-image)."""
    single = img.ndim == 3
    x = img[None] if single else img
    peak = 255.0 if img.dtype == torch.uint8 else 1.0
    return (x.clone() if x.dtype == torch.float32 else x.float()), peak, img.dtype, single


def from_work(x: torch.Tensor, dtype: torch.dtype, single: bool) -> torch.Tensor:
    """Back to the caller's dtype (uint8: rounded and clipped) and shape."""
    if dtype == torch.uint8:
        x = x.round_().clamp_(0, 255).to(torch.uint8)
    elif x.dtype != dtype:
        x = x.to(dtype)
    return x[0] if single else x


def _col(p: Param, x: torch.Tensor) -> Param:
    """A (B,) parameter shaped (B, 1, 1, 1) to broadcast over images; Python numbers pass as they are."""
    if isinstance(p, (int, float)):
        return float(p)
    return torch.as_tensor(p, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) luminance (ITU-R 601-2, as PIL); grey images are their own luminance."""
    if x.shape[1] == 1:
        return x
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _blend(x: torch.Tensor, other: torch.Tensor, factor: Param, peak: float) -> torch.Tensor:
    """``other + factor * (x - other)`` clipped: factor 1 is identity (PIL's ImageEnhance)."""
    f = _col(factor, x)
    return (other + f * (x - other)).clamp_(0, peak)


# ---------------------------------------------------------------- colour ops (work space: float, 0..peak)
def _brightness(x, delta, peak):
    return (x + _col(delta, x) * peak).clamp_(0, peak)


def _contrast(x, factor, peak):
    return _blend(x, _gray(x).mean(dim=(1, 2, 3), keepdim=True), factor, peak)


def _color(x, factor, peak):
    return _blend(x, _gray(x), factor, peak)


def _sharpness(x, factor, peak):
    c, h, w = x.shape[1:]
    if h < 3 or w < 3:
        return x
    # PIL's SMOOTH kernel [[1,1,1],[1,5,1],[1,1,1]] / 13 as a 3x3 box sum plus 4x the centre
    # (separable sums of slices: conv2d / avg_pool2d cost milliseconds of setup on tiny CPU images)
    rows = x[..., :-2, :] + x[..., 1:-1, :] + x[..., 2:, :]
    box = rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]
    blurred = x.clone()
    blurred[..., 1:-1, 1:-1] = (box + 4.0 * x[..., 1:-1, 1:-1]) / 13.0  # borders stay, as in PIL
    return _blend(x, blurred, factor, peak)


def _solarize(x, threshold, peak):
    return torch.where(x > _col(threshold, x) * peak, peak - x, x)


def _posterize(x, shift, peak):
    """Drop ``round(shift)`` low bits of the 8-bit value; shift 0 leaves the image untouched."""
    if isinstance(shift, (int, float)):
        q = 2.0 ** round(shift)
        return x if q == 1 else torch.floor(x * (255.0 / peak / q)) * (q * peak / 255.0)
    q = torch.pow(2.0, torch.round(_col(shift, x)))
    v = x * (255.0 / peak)
    return torch.where(q > 1, torch.floor(v / q) * q * (peak / 255.0), x)


def _autocontrast(x, _param, peak):
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    scale = torch.where(hi > lo, peak / (hi - lo).clamp_min(1e-12), torch.ones_like(hi))
    lo = torch.where(hi > lo, lo, torch.zeros_like(lo))
    return ((x - lo) * scale).clamp_(0, peak)


def _equalize(x, _param, peak):
    """torchvision's batched per-image, per-channel histogram equalisation (on 8-bit values)."""
    v = (x * (255.0 / peak)).round_().clamp_(0, 255).to(torch.uint8)
    return TF.equalize(v).to(x.dtype) * (peak / 255.0)


def _identity(x, _param, peak):
    return x


COLOR_OPS = {
    "identity": _identity, "autocontrast": _autocontrast, "equalize": _equalize,
    "brightness": _brightness, "contrast": _contrast, "color": _color, "sharpness": _sharpness,
    "solarize": _solarize, "posterize": _posterize,
}


# ---------------------------------------------------------------- geometry
def affine_terms(h: int, w: int, degrees: Param = 0.0, shear_x: Param = 0.0, shear_y: Param = 0.0,
                 tx: Param = 0.0, ty: Param = 0.0) -> tuple:
    """The forward pixel map ``[[a, b, tx'], [c, d, ty']]`` as six terms: the shear x' = x + shear_x * y,
    y' = y + shear_y * x, then a rotation by ``degrees`` (counter-clockwise on screen), both about the
    image centre, then a shift by (tx, ty) pixels. The one geometry formula of both paths:
    Python floats give floats (per image), (B,) tensors give tensors (batches)."""
    a = degrees * (math.pi / 180.0)
    cos, sin = (torch.cos(a), torch.sin(a)) if isinstance(a, torch.Tensor) else (math.cos(a), math.sin(a))
    a00, a01 = cos + sin * shear_y, cos * shear_x + sin
    a10, a11 = -sin + cos * shear_y, -sin * shear_x + cos
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    return a00, a01, cx - a00 * cx - a01 * cy + tx, a10, a11, cy - a10 * cx - a11 * cy + ty


def affine_matrix(h: int, w: int, **params: Param) -> torch.Tensor:
    """(B, 3, 3) forward pixel matrices of :func:`affine_terms` (at least one (B,) tensor parameter),
    for :func:`lit_effdl.augment.warp.warp_work`: every rotate, shear, translate and crop of a batch."""
    ref = torch.broadcast_tensors(*[p for p in params.values() if isinstance(p, torch.Tensor)])[0].float()
    terms = [t.float().expand_as(ref) if isinstance(t, torch.Tensor) else torch.full_like(ref, t)
             for t in affine_terms(h, w, **params)]  # constants filled where the batch lies: no host copy
    zero = torch.zeros_like(ref)
    return torch.stack([*terms, zero, zero, zero + 1.0], 1).view(-1, 3, 3)


def affine_from_points(src, dst) -> torch.Tensor:
    """The 2x3 matrix A with ``A @ [x, y, 1] = dst`` for three (x, y) pixel correspondences.

    Raises ``UserError`` when the source points are collinear (no unique affine map exists).
    """
    src = torch.as_tensor(src, dtype=torch.float64).reshape(3, 2)
    dst = torch.as_tensor(dst, dtype=torch.float64).reshape(3, 2)
    a = torch.cat([src, torch.ones(3, 1, dtype=torch.float64)], dim=1)  # rows [x, y, 1]
    scale = float(torch.linalg.matrix_norm(src - src.mean(0))) + 1e-12
    if abs(float(torch.linalg.det(a))) <= 1e-9 * scale * scale:
        raise UserError(f"affine source points {src.tolist()} are collinear: give three points "
                        "that span a triangle")
    return torch.linalg.solve(a, dst).T.float()  # (2, 3)


def cutout_mask(cy: torch.Tensor, cx: torch.Tensor, side: int, h: int, w: int) -> torch.Tensor:
    """(B, 1, H, W) mask of squares of ``side`` centred at (cy, cx), clipped at the borders."""
    top, left = (cy - side // 2)[:, None], (cx - side // 2)[:, None]
    rows = torch.arange(h, device=cy.device)[None] - top  # (B, H): inside where 0 <= . < side
    cols = torch.arange(w, device=cy.device)[None] - left
    row_in = (rows >= 0) & (rows < side)
    col_in = (cols >= 0) & (cols < side)
    return (row_in[:, :, None] & col_in[:, None, :])[:, None]


def magnitude_check(m: float, where: str) -> None:
    """Magnitudes live on the 0..30 scale of the RandAugment paper (and torchvision)."""
    if not (0 <= m <= 30) or math.isnan(m):
        raise UserError(f"magnitude {m} in '{where}' is out of range: use 0..30 (the paper's scale)")
