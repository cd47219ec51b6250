"""Augmentation ops on image tensors, shared by the per-image and the batched path.

Every op takes ``(C, H, W)`` or ``(B, C, H, W)`` images, uint8 (0..255) or float (0..1), and returns
the same dtype and shape. Parameters are floats or ``(B,)`` tensors (one value per sample), which is
what torchvision's v2 functionals lack (one scalar per call) and why the colour ops are written here:
the batched path needs per-sample factors, and both paths must run the same code to share one
distribution. Geometric ops are 3x3 pixel matrices (x right, y down, pixel centres at integers)
applied by :func:`warp` (:mod:`lit_effdl.augment.warp`: nearest sampling, one ``gather`` per call).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from lit_effdl.augment.warp import base_points, warp_work
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


def apply_color(name: str, img: torch.Tensor, param: Param = 0.0) -> torch.Tensor:
    """A colour op by name on uint8 / float images (per-sample ``param`` allowed)."""
    x, peak, dtype, single = to_work(img)
    return from_work(COLOR_OPS[name](x, param, peak), dtype, single)


def brightness(img: torch.Tensor, delta: Param) -> torch.Tensor:
    """Add ``delta`` (a fraction of the range, e.g. 0.2 = +51 on uint8), clipped to [0, 255] / [0, 1]."""
    return apply_color("brightness", img, delta)


def contrast(img: torch.Tensor, factor: Param) -> torch.Tensor:
    """Scale the distance to the mean grey level by ``factor`` (1 = identity), clipped."""
    return apply_color("contrast", img, factor)


# ---------------------------------------------------------------- geometry
def _eye(b: int, device=None) -> torch.Tensor:
    return torch.eye(3, device=device).repeat(b, 1, 1)


def _about_centre(m: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Conjugate pixel matrices so they act about the image centre."""
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    t = _eye(1, m.device)
    t[0, 0, 2], t[0, 1, 2] = cx, cy
    t_inv = _eye(1, m.device)
    t_inv[0, 0, 2], t_inv[0, 1, 2] = -cx, -cy
    return t @ m @ t_inv


def rotation_matrix(degrees: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, 3, 3) rotation by ``degrees`` (counter-clockwise on screen) about the centre."""
    a = torch.deg2rad(degrees.float())
    m = _eye(a.shape[0], a.device)
    m[:, 0, 0], m[:, 0, 1] = torch.cos(a), torch.sin(a)
    m[:, 1, 0], m[:, 1, 1] = -torch.sin(a), torch.cos(a)
    return _about_centre(m, h, w)


def shear_matrix(sx: torch.Tensor, sy: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, 3, 3) shear: x' = x + sx * y, y' = y + sy * x, about the centre."""
    m = _eye(sx.shape[0], sx.device)
    m[:, 0, 1], m[:, 1, 0] = sx.float(), sy.float()
    return _about_centre(m, h, w)


def translation_matrix(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) shift by (tx, ty) pixels."""
    m = _eye(tx.shape[0], tx.device)
    m[:, 0, 2], m[:, 1, 2] = tx.float(), ty.float()
    return m


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


def warp(img: torch.Tensor, matrices: list[tuple[torch.Tensor, str]], fill: float = 0.0) -> torch.Tensor:
    """Apply forward pixel matrices ``[(M (B,3,3), mode), ...]`` in order with one ``grid_sample``.

    ``mode`` is ``"fill"`` (points leaving the image become ``fill``, a fraction of the range) or
    ``"reflect"`` (coordinates reflect at the border, the convention of pad-and-crop). Each output
    pixel is traced back through the steps, so a chain equals applying the steps one by one.
    """
    x, peak, dtype, single = to_work(img)
    return from_work(warp_work(x, matrices, fill * peak), dtype, single)


def rotate(img: torch.Tensor, degrees: Param, fill: float = 0.0) -> torch.Tensor:
    """Rotate by ``degrees`` about the centre; uncovered pixels become ``fill`` (fraction of range)."""
    b = 1 if img.ndim == 3 else img.shape[0]
    d = torch.as_tensor(degrees, dtype=torch.float32).expand(b)
    return warp(img, [(rotation_matrix(d, *img.shape[-2:]), "fill")], fill)


def shear(img: torch.Tensor, sx: Param = 0.0, sy: Param = 0.0, fill: float = 0.0) -> torch.Tensor:
    """Shear about the centre: x' = x + sx * y, y' = y + sy * x."""
    b = 1 if img.ndim == 3 else img.shape[0]
    sx_t = torch.as_tensor(sx, dtype=torch.float32).expand(b)
    sy_t = torch.as_tensor(sy, dtype=torch.float32).expand(b)
    return warp(img, [(shear_matrix(sx_t, sy_t, *img.shape[-2:]), "fill")], fill)


def affine_points(img: torch.Tensor, src, dst, fill: float = 0.0) -> torch.Tensor:
    """Warp so the pixel at each ``src`` point lands on the matching ``dst`` point."""
    m = _eye(1)
    m[0, :2] = affine_from_points(src, dst)
    b = 1 if img.ndim == 3 else img.shape[0]
    return warp(img, [(m.expand(b, 3, 3), "fill")], fill)


def hflip(img: torch.Tensor) -> torch.Tensor:
    """Mirror left-right."""
    return img.flip(-1)


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


# ---------------------------------------------------------------- per-image fast path (Python floats)
Mat = list[list[float]]


def matmul3(a: Mat, b: Mat) -> Mat:
    """3x3 matrix product on Python lists (per-image paths avoid tiny tensor ops)."""
    return [[sum(a[i][k] * b[k][j] for k in range(3)) for j in range(3)] for i in range(3)]


def inverse_affine(m: Mat) -> Mat:
    """Inverse of an affine 3x3 (last row 0, 0, 1) on Python lists."""
    a, b, tx = m[0]
    c, d, ty = m[1]
    det = a * d - b * c
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    return [[ia, ib, -(ia * tx + ib * ty)], [ic, id_, -(ic * tx + id_ * ty)], [0.0, 0.0, 1.0]]


_NORM_BASE: dict = {}


def _norm_base(h: int, w: int, device, dtype) -> torch.Tensor:
    """(H*W, 3) normalised pixel centres [x, y, 1] (align_corners=False), cached."""
    key = (h, w, str(device), dtype)
    if key not in _NORM_BASE:
        pts = base_points(h, w, device, dtype).T.clone()
        pts[:, 0] = (2 * pts[:, 0] + 1) / w - 1
        pts[:, 1] = (2 * pts[:, 1] + 1) / h - 1
        _NORM_BASE[key] = pts
    return _NORM_BASE[key]


def warp_single(x: torch.Tensor, m: Mat, fill_value: float) -> torch.Tensor:
    """One forward pixel matrix (Python 3x3) on a float batch with ``affine_grid`` + ``grid_sample``
    (nearest; points leaving the image become ``fill_value``). Same rule as :func:`warp_work`."""
    b, c, h, w = x.shape
    (a, b_, t0), (d, e, t1), _ = inverse_affine(m)
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    # theta = S @ M^-1 @ S^-1, S: pixel centres -> normalised coordinates (align_corners=False)
    theta = [[a, b_ * h / w, 2.0 / w * (a * cx + b_ * cy + t0) + 1.0 / w - 1.0],
             [d * w / h, e, 2.0 / h * (d * cx + e * cy + t1) + 1.0 / h - 1.0]]
    # affine_grid's own arithmetic (normalised pixel centres @ theta^T) on a cached base grid
    theta_t = torch.tensor(theta, dtype=x.dtype, device=x.device)
    grid = (_norm_base(h, w, x.device, x.dtype) @ theta_t.T).view(1, h, w, 2).expand(b, h, w, 2)
    if fill_value == 0:
        return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return F.grid_sample(x - fill_value, grid, mode="nearest", padding_mode="zeros",
                         align_corners=False).add_(fill_value)
