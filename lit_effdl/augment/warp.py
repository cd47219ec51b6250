"""Nearest-neighbour warps of image batches by chains of per-sample 3x3 pixel matrices.

Conventions: x right, y down, pixel centres at integers. A step is ``(M, mode)`` with ``M`` a
``(B, 3, 3)`` forward pixel matrix and ``mode`` one of ``fill`` (points leaving the image become
the fill value), ``reflect`` (coordinates fold at the border without repeating the edge pixel, the
pad-and-crop convention) or ``keep`` (a step that never leaves the image, e.g. a flip: no check).

Hand-written because ``grid_sample`` has one padding rule per call and works in float only: here
a chain of steps with different border rules becomes one flat source index per output pixel and
one ``gather`` (uint8 stays uint8, no float copy of the batch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Steps = list[tuple[torch.Tensor, str]]
_BASE: dict = {}


def base_points(h: int, w: int, device, dtype) -> torch.Tensor:
    """(3, H*W) homogeneous pixel centres, cached per size, device and dtype."""
    key = (h, w, str(device), dtype)
    if key not in _BASE:
        ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=dtype),
                                torch.arange(w, device=device, dtype=dtype), indexing="ij")
        _BASE[key] = torch.stack([xs.reshape(-1), ys.reshape(-1), torch.ones(h * w, device=device, dtype=dtype)])
    return _BASE[key]


def _bounds(h: int, w: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, 2, 1) image centre and half extent (x, y): a point is outside when |p - centre| > half."""
    key = ("bounds", h, w, str(device), dtype)
    if key not in _BASE:
        _BASE[key] = (torch.tensor([(w - 1) / 2.0, (h - 1) / 2.0], device=device, dtype=dtype).view(1, 2, 1),
                      torch.tensor([w / 2.0, h / 2.0], device=device, dtype=dtype).view(1, 2, 1))
    return _BASE[key]


def inverse_terms(a, b, tx, c, d, ty) -> tuple:
    """The inverse of the affine map ``[[a, b, tx], [c, d, ty]]`` as the same six terms, in closed
    form: Python floats (per image) or (B,) tensors (batches: a few vector ops, no LAPACK call)."""
    det = a * d - b * c
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    return ia, ib, -(ia * tx + ib * ty), ic, id_, -(ic * tx + id_ * ty)


def compose_terms(outer: tuple, inner: tuple) -> tuple:
    """The six terms of ``outer @ inner`` (first ``inner``, then ``outer``) for Python-float terms."""
    a, b, tx, c, d, ty = outer
    e, f, ux, g, k, uy = inner
    return a * e + b * g, a * f + b * k, a * ux + b * uy + tx, c * e + d * g, c * f + d * k, c * ux + d * uy + ty


def affine_inverse(m: torch.Tensor) -> torch.Tensor:
    """Inverse of affine ``(B, 3, 3)`` matrices (last row 0, 0, 1)."""
    inverse = inverse_terms(*m[:, :2].reshape(-1, 6).unbind(1))
    zero = torch.zeros_like(inverse[0])
    return torch.stack([*inverse, zero, zero, zero + 1.0], 1).view(-1, 3, 3)


def apply_affine(m: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """Affine (B, 3, 3) on (B or 1, 2, N) points -> (B, 2, N)."""
    return torch.baddbmm(m[:, :2, 2:], m[:, :2, :2], pts.expand(m.shape[0], 2, -1))


def reflect(v: torch.Tensor, size: int) -> torch.Tensor:
    """Fold coordinates into ``[0, size - 1]`` without repeating the edge (``F.pad`` 'reflect')."""
    period = 2 * (size - 1) if size > 1 else 1
    v = torch.remainder(v, period)
    return torch.where(v > size - 1, period - v, v)


def warp_work(x: torch.Tensor, steps: Steps, fill_value: float, lead_axis_aligned: bool | None = None) -> torch.Tensor:
    """Apply ``steps`` in order to a ``(B, C, H, W)`` batch (float, or uint8: no float copy) with
    nearest sampling; ``fill_value`` in the batch's units. Each output pixel is traced back through
    the steps, so a chain equals applying the steps one by one.

    Fast path (every preset): the ``keep`` / ``reflect`` steps come first, are axis-aligned (flips,
    crops) and hold at most one ``reflect``. Then the ``fill`` steps are traced and checked, the lead
    is two per-sample scalars per axis, and the sample is one ``gather``. ``lead_axis_aligned=True``
    (the caller built the lead from flips and crops) skips checking that on the host: no sync on GPUs.
    """
    b, _, h, w = x.shape
    modes = [mode for _, mode in steps]
    first_fill = modes.index("fill") if "fill" in modes else len(modes)
    lead, rest = steps[:first_fill], steps[first_fill:]
    if modes.count("reflect") > 1 or any(mode != "fill" for _, mode in rest):
        return _warp_traced(x, steps, fill_value)
    ft = x.dtype if x.is_floating_point() else torch.float32
    lead_inv = None
    if lead:
        composed = lead[0][0].to(x.device, ft)
        for m, _ in lead[1:]:
            composed = m.to(x.device, ft) @ composed
        lead_inv = affine_inverse(composed)
        if not lead_axis_aligned and bool((lead_inv[:, 0, 1] != 0).any() | (lead_inv[:, 1, 0] != 0).any()):
            return _warp_traced(x, steps, fill_value)
    pts = base_points(h, w, x.device, ft)[None, :2]
    centre, half = _bounds(h, w, x.device, ft)
    outside = None
    for m, _ in reversed(rest):
        pts = apply_affine(affine_inverse(m.to(x.device, ft)), pts)
        now = (pts - centre).abs_().gt_(half).any(1)  # left the image at this step (x or y)
        outside = now if outside is None else outside.logical_or_(now)
    if lead_inv is not None:  # axis-aligned: x' = sx * x + tx, y' = sy * y + ty, per sample
        pts = torch.addcmul(lead_inv[:, :2, 2:], lead_inv[:, [0, 1], [0, 1]][:, :, None], pts)
    return _gather(x, pts, outside, fill_value, "reflect" in modes)


def warp_terms(x: torch.Tensor, terms: tuple, fill_value: float) -> torch.Tensor:
    """One ``fill`` step given as the six Python-float terms of its forward map, for every image of
    ``x``: :func:`warp_work`'s rule and sampler, with the map's algebra on floats (the per-image path
    warps one image at a time, where tensor ops on 3x3 matrices would cost more than the warp)."""
    b, _, h, w = x.shape
    ft = x.dtype if x.is_floating_point() else torch.float32
    inverse = torch.tensor(inverse_terms(*terms), dtype=ft, device=x.device).view(1, 2, 3)
    pts = torch.baddbmm(inverse[:, :, 2:], inverse[:, :, :2], base_points(h, w, x.device, ft)[None, :2])
    centre, half = _bounds(h, w, x.device, ft)
    return _gather(x, pts, (pts - centre).abs_().gt_(half).any(1), fill_value, False)


def _gather(x: torch.Tensor, pts: torch.Tensor, outside: torch.Tensor | None, fill_value: float,
            reflecting: bool) -> torch.Tensor:
    """Nearest samples of ``x`` at source points ``pts`` (B or 1, 2, H*W): one ``gather``; points
    ``outside`` take ``fill_value``, and with ``reflecting`` coordinates fold at the border."""
    b, c, h, w = x.shape
    src = pts.round().expand(b, 2, h * w)
    px, py = src[:, 0], src[:, 1]
    if reflecting:
        px, py = reflect(px, w), reflect(py, h)
    index = torch.add(px, py, alpha=w)  # y * w + x, exact in float32 below 2^24
    flat = x.reshape(b, c, h * w)
    if outside is not None:  # one extra pixel holding the fill value, the source of outside points
        flat = torch.cat([flat, torch.full((b, c, 1), fill_value, dtype=x.dtype, device=x.device)], 2)
        index.masked_fill_(outside, h * w)
    index = index.to(torch.long).clamp_(0, flat.shape[2] - 1)
    return torch.gather(flat, 2, index[:, None].expand(b, c, h * w)).reshape(b, c, h, w)


def _warp_traced(x: torch.Tensor, steps: Steps, fill_value: float) -> torch.Tensor:
    """General :func:`warp_work`: trace every pixel back step by step, folding reflect steps."""
    b, _, h, w = x.shape
    dtype = x.dtype if x.is_floating_point() else torch.float32
    pts = base_points(h, w, x.device, dtype).expand(b, 3, h * w)
    outside = torch.zeros(b, h * w, dtype=torch.bool, device=x.device)
    for m, mode in reversed(steps):
        pts = affine_inverse(m.to(x.device, dtype)) @ pts
        if mode == "fill":
            px, py = pts[:, 0], pts[:, 1]
            outside |= (px < -0.5) | (px > w - 0.5) | (py < -0.5) | (py > h - 0.5)
        elif mode == "reflect":
            pts = torch.stack([reflect(pts[:, 0], w), reflect(pts[:, 1], h), pts[:, 2]], 1)
    grid = torch.stack([(2 * pts[:, 0] + 1) / w - 1, (2 * pts[:, 1] + 1) / h - 1], -1).reshape(b, h, w, 2)
    src = x if x.is_floating_point() else x.float()
    out = F.grid_sample(src, grid, mode="nearest", padding_mode="border", align_corners=False)
    out = out.masked_fill_(outside.reshape(b, 1, h, w), fill_value)
    return out if x.is_floating_point() else out.round_().to(x.dtype)
