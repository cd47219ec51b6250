"""The batched on-device path: a spec applied to a whole ``(B, C, H, W)`` batch where it lies (GPU).

Every sample draws its own parameters (flip, crop offset, RandAugment ops and magnitudes, cutout
box, colour jitter, blur sigma...). All geometric steps (flip, pad-crop, rrc, rotate, shear, affine3 and RandAugment's
rotate / shear / translate) are traced into **one** nearest-neighbour ``gather`` (``warp.warp_work``); colour ops
then run on the samples that drew them, broadcasting per-sample factors, in spec / slot order, and
cutout last in its place. Ops are the same functions as the per-image path (:mod:`ops`), and
RandAugment composes an image's geometric ops into one map before its colour ops on both paths,
so both draw from one distribution for specs whose geometric tokens come before colour tokens (all presets). Two
differences: a colour token written before a geometric one still runs after it here, and ``rrc``
samples nearest instead of torchvision's antialiased resize.

The data module applies it with ``augment_on: device`` (``LabelBudgetDataModule.on_after_batch_transfer``).
"""

from __future__ import annotations

import math

import torch

from lit_effdl.augment import ops
from lit_effdl.augment.photometric import PHOTOMETRIC
from lit_effdl.augment.pipelines import GREY, RandomGeometry, expand_spec, parse_token
from lit_effdl.augment.randaugment import OP_TABLE, RA_OPS, draw_ops, geom_matrix, op_param
from lit_effdl.augment.warp import warp_work


class BatchedPipeline:
    """``spec`` on uint8 / float batches with independent random parameters per sample.

    Args:
        spec: the same spec strings as :func:`lit_effdl.augment.build_pipeline`.
        fill: value of pixels uncovered by rotate / shear / translate, as a fraction of the range.
    """

    def __init__(self, spec: str, fill: float = 0.0):
        self.spec = spec
        self.steps = [parse_token(t) for t in expand_spec(spec)]
        self.steps = [(n, a) for n, a in self.steps if n != "none"]
        self.fill = fill

    def __bool__(self) -> bool:
        return bool(self.steps)

    def __repr__(self) -> str:
        return f"BatchedPipeline('{self.spec}')"

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        single = images.ndim == 3
        x = (images[None] if single else images).clone()  # uint8 stays uint8 (gathers, masks)
        peak = 255.0 if x.dtype == torch.uint8 else 1.0
        b, _, h, w = x.shape
        dev = x.device
        geometry: list[tuple[torch.Tensor, str]] = []
        colour: list = []
        for name, a in self.steps:
            if name == "flip":
                m = torch.eye(3, device=dev).repeat(b, 1, 1)
                flip = (torch.rand(b, device=dev) < a["p"]).float()  # no boolean indexing: no host sync
                m[:, 0, 0], m[:, 0, 2] = 1.0 - 2.0 * flip, (w - 1.0) * flip
                geometry.append((m, "keep"))
            elif name == "crop":
                pad = int(a["pad"]) if a["pad"] is not None else max(1, h // 8)
                shift = torch.randint(0, 2 * pad + 1, (2, b), device=dev).float()
                geometry.append((ops.affine_matrix(h, w, tx=pad - shift[1], ty=pad - shift[0]), "reflect"))
            elif name == "rrc":
                geometry.append((_rrc_matrix(b, h, w, a["s"], dev), "fill"))
            elif name in ("rotate", "shear", "affine3"):
                geometry.append((RandomGeometry(name, next(iter(a.values()))).matrix(b, h, w, dev), "fill"))
            elif name in ("brightness", "contrast"):
                u = (torch.rand(b, device=dev) * 2 - 1) * next(iter(a.values()))
                param = u if name == "brightness" else 1.0 + u
                colour.append(lambda t, n=name, p=param: ops.COLOR_OPS[n](t, p, peak))
            elif name == "cutout":
                side = round(a["s"] * min(h, w))
                cy, cx = torch.randint(0, h, (b,), device=dev), torch.randint(0, w, (b,), device=dev)
                mask = ops.cutout_mask(cy, cx, side, h, w)
                colour.append(lambda t, m=mask: t.masked_fill_(m, GREY * peak))
            elif name in PHOTOMETRIC:  # jitter, gray, blur: per-sample parameters drawn here, in spec order
                op = PHOTOMETRIC[name](**a)
                params = op.draw(b, dev)
                colour.append(lambda t, op=op, params=params: op.apply(t, params, peak))
            elif name == "rand":
                self._randaugment(b, h, w, int(a["n"]), a["m"], a["mstd"], peak, geometry, colour, dev)
        if geometry:
            fill = round(self.fill * 255) if x.dtype == torch.uint8 else self.fill
            x = warp_work(x, geometry, fill, lead_axis_aligned=True)  # flips and crops lead
        if colour:  # one float copy for all colour steps, rounded once at the end (as per image)
            dtype, x = x.dtype, x.float()
            for step in colour:
                x = step(x)
            x = ops.from_work(x, dtype, False)
        return x[0] if single else x

    def _randaugment(self, b, h, w, num_ops, magnitude, mstd, peak, geometry, colour, dev) -> None:
        idx, mag, sign = draw_ops(b, num_ops, magnitude, mstd, len(RA_OPS), device=dev)
        composed = None  # a sample's geometric ops, composed into one map
        for k in range(num_ops):
            m = _slot_matrix(idx[:, k], mag[:, k], sign[:, k], h, w)
            composed = m if composed is None else m @ composed
            colour.append(lambda t, k=k: _colour_slot(t, idx[:, k], mag[:, k], sign[:, k], peak))
        if composed is not None:
            geometry.append((composed, "fill"))


def _slot_matrix(idx: torch.Tensor, mag: torch.Tensor, sign: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, 3, 3) matrices of one RandAugment slot, identity for colour ops: all samples at once."""
    def value(name):
        return torch.where(idx == RA_OPS.index(name), op_param(name, mag, sign), torch.zeros_like(mag))

    return geom_matrix({name: value(name) for name in RA_OPS if OP_TABLE[name][0] == "geom"}, h, w)


def _colour_slot(x: torch.Tensor, idx, mag, sign, peak: float, select: bool | None = None) -> torch.Tensor:
    """Apply each colour op of one RandAugment slot to the samples that drew it.

    On the CPU only the drawers are computed (finding them reads the draws on the host, which is
    free there); on an accelerator every sample computes every op and keeps its own draw's result,
    so a training step never waits on a host read. ``select`` forces one or the other."""
    on_cpu = x.device.type == "cpu" if select is None else select
    for j, name in enumerate(RA_OPS):
        if OP_TABLE[name][0] == "geom" or name == "identity":
            continue
        if on_cpu:
            sel = (idx == j).nonzero().squeeze(1)
            if sel.numel():
                param = op_param(name, mag.index_select(0, sel), sign.index_select(0, sel))
                x.index_copy_(0, sel, ops.COLOR_OPS[name](x.index_select(0, sel), param, peak))
        else:
            drew = (idx == j).view(-1, 1, 1, 1)
            x = torch.where(drew, ops.COLOR_OPS[name](x, op_param(name, mag, sign), peak), x)
    return x


def _rrc_matrix(b: int, h: int, w: int, min_scale: float, dev) -> torch.Tensor:
    """Random resized crop as a forward matrix: box of area U(s, 1) and log-uniform ratio 3/4..4/3."""
    area = torch.empty(b, device=dev).uniform_(min_scale, 1.0) * h * w
    log_ratio = torch.empty(b, device=dev).uniform_(math.log(3 / 4), math.log(4 / 3))
    ratio = torch.exp(log_ratio)
    bw = torch.sqrt(area * ratio).clamp(1, w)
    bh = torch.sqrt(area / ratio).clamp(1, h)
    x0 = torch.rand(b, device=dev) * (w - bw)
    y0 = torch.rand(b, device=dev) * (h - bh)
    m = torch.eye(3, device=dev).repeat(b, 1, 1)
    # box pixel edges [x0, x0 + bw) map onto [0, w): x' = (x - x0 + 0.5) * w / bw - 0.5
    m[:, 0, 0], m[:, 1, 1] = w / bw, h / bh
    m[:, 0, 2] = (0.5 - x0) * w / bw - 0.5
    m[:, 1, 2] = (0.5 - y0) * h / bh - 0.5
    return m


def build_batched(spec: str | None, fill: float = 0.0) -> BatchedPipeline | None:
    """The batched pipeline of ``spec``; ``None`` when the spec does nothing."""
    if spec is None:
        return None
    pipeline = BatchedPipeline(spec, fill)
    return pipeline if pipeline else None

