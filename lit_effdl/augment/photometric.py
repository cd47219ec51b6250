"""SimCLR's photometric ops with one parameter set per sample: colour jitter, random grayscale, Gaussian blur.

Each op draws the parameters of a batch (``draw``) and applies them (``apply``) to a float batch in
0..peak; the per-image pipeline calls ``work`` (both at once), the batched device path draws when it
traces the spec and applies in its colour pass. A sample that does not draw the op (probability
``1 - p``) gets identity parameters, so no sample is picked out with a mask (no host sync).
Colour (saturation, hue, grayscale) only changes 3-channel images; on grey images ``jitter`` is
brightness and contrast, ``gray`` nothing. torchvision's v2 ops take one scalar per call: the
batched path needs per-sample factors, hence these few lines.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lit_effdl.augment import ops
from lit_effdl.errors import UserError

_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _uniform(n: int, low: float, high: float, device) -> torch.Tensor:
    return torch.rand(n, device=device) * (high - low) + low


class PhotometricOp:
    """``draw`` per-sample parameters, ``apply`` them; ``work`` is both (a pipeline step)."""

    def draw(self, n: int, device=None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def apply(self, x: torch.Tensor, params: dict[str, torch.Tensor], peak: float) -> torch.Tensor:
        raise NotImplementedError

    def work(self, x: torch.Tensor, peak: float) -> torch.Tensor:
        return self.apply(x, self.draw(x.shape[0], x.device), peak)


def hue_shift(x: torch.Tensor, turns: torch.Tensor, peak: float) -> torch.Tensor:
    """Hue rotated by ``turns`` (B,) of a full turn: a rotation of the YIQ chroma plane (a linear
    stand-in for HSV's hue shift, one 3x3 matrix per sample), clipped to the range."""
    angle = turns.to(x) * (2 * math.pi)
    rotation = torch.zeros(len(angle), 3, 3, dtype=x.dtype, device=x.device)
    rotation[:, 0, 0] = 1.0
    rotation[:, 1, 1], rotation[:, 1, 2] = angle.cos(), -angle.sin()
    rotation[:, 2, 1], rotation[:, 2, 2] = angle.sin(), angle.cos()
    to_yiq = _RGB_TO_YIQ.to(x)
    matrix = torch.linalg.inv(to_yiq) @ rotation @ to_yiq
    return torch.einsum("bij,bjhw->bihw", matrix, x).clamp_(0, peak)


class ColourJitter(PhotometricOp):
    """With probability ``p``: brightness x U(1-b, 1+b), contrast U(1-c, 1+c), saturation U(1-s, 1+s),
    hue shift U(-h, h) of a turn, in this order (torchvision's ``ColorJitter`` shuffles the order)."""

    def __init__(self, p: float = 0.8, b: float = 0.4, c: float = 0.4, s: float = 0.4, h: float = 0.1):
        for name, value in (("b", b), ("c", c), ("s", s)):
            if not 0 <= value <= 1:
                raise UserError(f"jitter: {name}={value} is out of range: use 0..1 (a factor in [1-{name}, 1+{name}])")
        if not 0 <= h <= 0.5:
            raise UserError(f"jitter: h={h} is out of range: use 0..0.5 (a share of a full hue turn)")
        self.p, self.b, self.c, self.s, self.h = p, b, c, s, h

    def draw(self, n, device=None):
        on = (torch.rand(n, device=device) < self.p).float()
        factor = lambda amount: 1.0 + on * _uniform(n, -amount, amount, device)
        return {"brightness": factor(self.b), "contrast": factor(self.c), "saturation": factor(self.s),
                "hue": on * _uniform(n, -self.h, self.h, device)}

    def apply(self, x, params, peak):
        x = ops._blend(x, torch.zeros_like(x), params["brightness"], peak)  # multiplicative, as torchvision's
        x = ops.COLOR_OPS["contrast"](x, params["contrast"], peak)
        if x.shape[1] != 3:
            return x
        return hue_shift(ops.COLOR_OPS["color"](x, params["saturation"], peak), params["hue"], peak)


class RandomGrayscale(PhotometricOp):
    """With probability ``p`` the luminance in every channel (3-channel images only)."""

    def __init__(self, p: float = 0.2):
        self.p = p

    def draw(self, n, device=None):
        return {"saturation": (torch.rand(n, device=device) >= self.p).float()}  # 0: grey, 1: unchanged

    def apply(self, x, params, peak):
        return ops.COLOR_OPS["color"](x, params["saturation"], peak) if x.shape[1] == 3 else x


class GaussianBlur(PhotometricOp):
    """With probability ``p`` a Gaussian blur of sigma U(0.1, ``sigma``) pixels, kernel side 10 % of the
    image (odd, at least 3) and reflected borders, as SimCLR; separable, one kernel per sample."""

    def __init__(self, p: float = 0.5, sigma: float = 2.0):
        if sigma < 0.1:
            raise UserError(f"blur: sigma={sigma} is out of range: use 0.1 or more (pixels)")
        self.p, self.sigma = p, sigma

    def draw(self, n, device=None):
        on = torch.rand(n, device=device) < self.p
        return {"sigma": torch.where(on, _uniform(n, 0.1, self.sigma, device), torch.zeros(n, device=device))}

    def apply(self, x, params, peak):
        b, c, h, w = x.shape
        radius = max(1, int(0.1 * min(h, w)) // 2)
        offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
        sigma = params["sigma"].to(x).clamp_min(1e-3)[:, None]  # sigma 0 (not drawn): the kernel [0, 1, 0]
        kernel = torch.exp(-offsets[None] ** 2 / (2 * sigma**2))
        kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (B * C, 2r + 1)
        y = F.pad(x.reshape(1, b * c, h, w), (radius, radius, 0, 0), mode="reflect")
        y = F.conv2d(y, kernel[:, None, None, :], groups=b * c)
        y = F.pad(y, (0, 0, radius, radius), mode="reflect")
        return F.conv2d(y, kernel[:, None, :, None], groups=b * c).reshape(b, c, h, w)


PHOTOMETRIC: dict[str, type[PhotometricOp]] = {"jitter": ColourJitter, "gray": RandomGrayscale, "blur": GaussianBlur}
