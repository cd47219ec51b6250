"""Augmentation pipelines from spec strings usable in YAML and on the command line.

A spec is ``+``-joined tokens applied left to right to a uint8 ``(C, H, W)`` tensor (float 0..1 works
too). A token is a name with optional ``-<key><number>`` arguments:

=====================  ==============================================================================
``none``               nothing
``flip[-p0.5]``        horizontal flip with probability p
``crop[-pad4]``        pad by ``pad`` pixels (default size/8) with reflection, random crop back
``rrc[-s0.35]``        random resized crop, area scale in [s, 1], aspect ratio 3/4..4/3
``rotate[-d30]``       rotation by U(-d, d) degrees (black fill)
``shear[-s0.3]``       shear x and y by U(-s, s)
``affine3[-j0.1]``     affine from three point correspondences: three reference points jittered by
                       up to j of the side, the 2x3 matrix solved from src -> dst
``brightness[-d0.25]`` add U(-d, d) of the range, clipped to it
``contrast[-f0.5]``    contrast factor U(1-f, 1+f)
``cutout[-s0.5]``      a grey square of side s * size at a uniform centre, clipped at the border
``rand-nN-mM[-mstdS]`` RandAugment, N ops at magnitude M on the paper's 0..30 scale, noise std S
``jitter[-p0.8-b0.4``  with probability p: brightness, contrast, saturation factors U(1-x, 1+x) and a hue
``-c0.4-s0.4-h0.1]``   shift U(-h, h) of a turn (colour on 3-channel images only; :mod:`.photometric`)
``gray[-p0.2]``        with probability p the luminance in every channel (3-channel images only)
``blur[-p0.5-sigma2]`` with probability p a Gaussian blur, sigma U(0.1, sigma) pixels, kernel 10 % of the side
=====================  ==============================================================================

Presets: ``weak`` = ``flip+crop``; ``strong`` = ``flip+crop+rand-n2-m10+cutout`` (FixMatch's recipe);
``weak_noflip`` / ``strong_noflip`` leave out the flip (digits are not mirror-symmetric);
``simclr`` = ``rrc-s0.2+flip+jitter+gray+blur`` (SimCLR's views), ``simclr_noflip`` without the flip.
The batched on-device path (:mod:`lit_effdl.augment.batched`) reads the same specs.
"""

from __future__ import annotations

import re
from typing import Callable

import torch
from torchvision.transforms import v2

from lit_effdl.augment import ops
from lit_effdl.augment.photometric import PHOTOMETRIC
from lit_effdl.augment.randaugment import RandAugment
from lit_effdl.augment.warp import warp_work
from lit_effdl.errors import UserError

PRESETS = {
    "weak": "flip+crop",
    "strong": "flip+crop+rand-n2-m10+cutout",
    "weak_noflip": "crop",
    "strong_noflip": "crop+rand-n2-m10+cutout",
    "simclr": "rrc-s0.2+flip+jitter+gray+blur",
    "simclr_noflip": "rrc-s0.2+jitter+gray+blur",
}
# token name -> {argument: default}; None = image-size dependent or required
TOKEN_ARGS: dict[str, dict[str, float | None]] = {
    "none": {}, "flip": {"p": 0.5}, "crop": {"pad": None}, "rrc": {"s": 0.35},
    "rotate": {"d": 30.0}, "shear": {"s": 0.3}, "affine3": {"j": 0.1},
    "brightness": {"d": 0.25}, "contrast": {"f": 0.5}, "cutout": {"s": 0.5},
    "rand": {"n": 2, "m": None, "mstd": 0.0},
    "jitter": {"p": 0.8, "b": 0.4, "c": 0.4, "s": 0.4, "h": 0.1}, "gray": {"p": 0.2}, "blur": {"p": 0.5, "sigma": 2.0},
}
TOKENS = tuple(TOKEN_ARGS)
_ARG = re.compile(r"^([a-z]+)(\d+(?:\.\d+)?)$")
GREY = 0.5  # cutout fill, fraction of the range


def parse_token(token: str) -> tuple[str, dict[str, float]]:
    """``'rand-n2-m9'`` -> ``('rand', {'n': 2, 'm': 9, 'mstd': 0})``; ``UserError`` when malformed."""
    name, *raw = token.split("-")
    if name not in TOKEN_ARGS:
        raise UserError(f"unknown augmentation '{token}': valid tokens are {', '.join(TOKENS)} "
                        f"and presets {', '.join(PRESETS)}, joined with '+'")
    allowed = TOKEN_ARGS[name]
    args = dict(allowed)
    for part in raw:
        match = _ARG.match(part)
        if not match or match.group(1) not in allowed:
            keys = ", ".join(f"-{k}<number>" for k in allowed) or "no arguments"
            raise UserError(f"malformed augmentation '{token}': '{part}' is not an argument of "
                            f"'{name}' (it takes {keys})")
        args[match.group(1)] = float(match.group(2))
    missing = [k for k, v in args.items() if v is None and not (name == "crop" and k == "pad")]
    if missing:
        raise UserError(f"malformed augmentation '{token}': '{name}' needs -{missing[0]}<number> "
                        f"(e.g. rand-n2-m9)")
    if name == "rand":
        ops.magnitude_check(args["m"], token)
    for key in ("p", "s", "j"):
        if key in args and args[key] is not None and not 0 <= args[key] <= 1:
            raise UserError(f"'{token}': {key}={args[key]} is out of range: use 0..1")
    return name, args


class _Step:
    """A per-image transform working on a float batch in 0..peak (``work``); callable on images."""

    def work(self, x: torch.Tensor, peak: float) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        x, peak, dtype, single = ops.to_work(img)
        return ops.from_work(self.work(x, peak), dtype, single)


class RandomFlip(_Step):
    """Horizontal flip with probability ``p``."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def work(self, x, peak):
        return x.flip(-1) if float(torch.rand(())) < self.p else x


class PadCrop(_Step):
    """Reflect-pad by ``pad`` pixels and crop a random window of the original size (CIFAR style)."""

    def __init__(self, pad: int):
        self.pad = int(pad)

    def work(self, x, peak):
        p = self.pad
        h, w = x.shape[-2:]
        dy, dx = torch.randint(0, 2 * p + 1, (2,)).tolist()
        return torch.nn.functional.pad(x, (p, p, p, p), mode="reflect")[..., dy:dy + h, dx:dx + w]


class Cutout(_Step):
    """A grey square of side ``round(frac * min(H, W))`` at a uniform centre, clipped at the border."""

    def __init__(self, frac: float = 0.5):
        self.frac = frac

    def work(self, x, peak):
        h, w = x.shape[-2:]
        side = round(self.frac * min(h, w))
        if side == 0:
            return x
        u = torch.rand(2).tolist()  # centre uniform over the pixels, as torch.randint(0, h) would draw
        cy, cx = min(int(u[0] * h), h - 1), min(int(u[1] * w), w - 1)
        top, left = max(0, cy - side // 2), max(0, cx - side // 2)
        bottom, right = min(h, cy - side // 2 + side), min(w, cx - side // 2 + side)
        x = x.clone()
        x[..., top:bottom, left:right] = GREY * peak
        return x


class RandomGeometry(_Step):
    """Random rotation / shear / three-point affine (one draw per call, black fill)."""

    def __init__(self, kind: str, amount: float):
        self.kind, self.amount = kind, amount

    def matrix(self, b: int, h: int, w: int, device=None) -> torch.Tensor:
        """(B, 3, 3) forward pixel matrices for ``b`` independent draws."""
        u = torch.rand(b, 6, device=device) * 2 - 1
        if self.kind == "rotate":
            return ops.affine_matrix(h, w, degrees=u[:, 0] * self.amount)
        if self.kind == "shear":
            return ops.affine_matrix(h, w, shear_x=u[:, 0] * self.amount, shear_y=u[:, 1] * self.amount)
        # affine3: reference triangle jittered by up to amount * side, A solved from src -> dst
        src = torch.tensor([[0.25 * w, 0.25 * h], [0.75 * w, 0.25 * h], [0.5 * w, 0.75 * h]], device=device)
        dst = src + u.reshape(b, 3, 2) * self.amount * torch.tensor([w, h], device=device)
        m = torch.eye(3, device=device).repeat(b, 1, 1)
        for i in range(b):
            m[i, :2] = ops.affine_from_points(src, dst[i]).to(m)
        return m

    def work(self, x, peak):
        return warp_work(x, [(self.matrix(x.shape[0], *x.shape[-2:], x.device), "fill")], 0.0)


class RandomColor(_Step):
    """Additive brightness U(-d, d) of the range (clipped) or contrast factor U(1-f, 1+f)."""

    def __init__(self, kind: str, amount: float):
        self.kind, self.amount = kind, amount

    def param(self, b: int, device=None) -> torch.Tensor:
        u = (torch.rand(b, device=device) * 2 - 1) * self.amount
        return u if self.kind == "brightness" else 1.0 + u

    def work(self, x, peak):
        return ops.COLOR_OPS[self.kind](x, self.param(x.shape[0], x.device), peak)


class TorchvisionStep(_Step):
    """A torchvision v2 transform (e.g. ``RandomResizedCrop``) inside a pipeline's float work space."""

    def __init__(self, transform):
        self.transform = transform

    def work(self, x, peak):
        return self.transform(x)


def token_transform(token: str, image_size: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The per-image transform of one token (``None`` for ``none``)."""
    name, a = parse_token(token)
    if name == "none":
        return None
    if name == "flip":
        return RandomFlip(a["p"])
    if name == "crop":
        pad = a["pad"] if a["pad"] is not None else max(1, image_size // 8)
        return PadCrop(int(pad))
    if name == "rrc":
        return TorchvisionStep(v2.RandomResizedCrop(image_size, scale=(a["s"], 1.0), antialias=True))
    if name in ("rotate", "shear", "affine3"):
        return RandomGeometry(name, next(iter(a.values())))
    if name in ("brightness", "contrast"):
        return RandomColor(name, next(iter(a.values())))
    if name == "cutout":
        return Cutout(a["s"])
    if name in PHOTOMETRIC:
        return PHOTOMETRIC[name](**a)
    return RandAugment(int(a["n"]), a["m"], a["mstd"])


def expand_spec(spec: str) -> list[str]:
    """Presets replaced by their tokens, whitespace removed."""
    tokens: list[str] = []
    for token in spec.replace(" ", "").split("+"):
        tokens += PRESETS[token].split("+") if token in PRESETS else [token]
    return [t for t in tokens if t]


class Pipeline:
    """Tokens' transforms applied in order on one float copy of the image (converted once, rounded
    once at the end; ``v2.Compose`` would convert per step and pay its pytree overhead per call)."""

    def __init__(self, steps: list, spec: str):
        self.steps, self.spec = steps, spec

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        x, peak, dtype, single = ops.to_work(img)
        for step in self.steps:
            x = step.work(x, peak)
        return ops.from_work(x, dtype, single)

    def __repr__(self) -> str:
        return f"Pipeline('{self.spec}')"


def build_pipeline(spec: str | None, image_size: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The transform for ``spec`` on images of ``image_size``; ``None`` when it does nothing."""
    if spec is None:
        return None
    steps = [t for t in (token_transform(tok, image_size) for tok in expand_spec(spec)) if t is not None]
    if not steps:
        return None
    return Pipeline(steps, spec)


def is_random_spec(spec: str | None) -> bool:
    """Whether the pipeline draws random numbers (caches of model outputs are then invalid)."""
    return spec is not None and any(parse_token(t)[0] != "none" for t in expand_spec(spec))
