"""Safe weight loading: ``torch.load(..., weights_only=True)`` only, and mismatches reported by name.

Accepts a lit-effdl checkpoint (backbone weights extracted, the EMA copy preferred), a plain
timm / torchvision ``state_dict`` (optionally under ``state_dict`` / ``model`` keys) or a
``.safetensors`` file.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from lit_effdl.errors import UserError


def read_state_dict(path: str | Path, prefer_ema: bool = True) -> dict[str, torch.Tensor]:
    """The backbone tensors stored in ``path``, with any lit-effdl / wrapper prefixes removed."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"checkpoint_path {path} is not a file: give a .ckpt, .pt/.pth or .safetensors file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise UserError(
            f"refusing to load {path}: it needs arbitrary code to unpickle (weights_only=True rejected it: "
            f"{str(err).splitlines()[0]}); save a plain state_dict or safetensors file instead"
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise UserError(f"cannot read checkpoint {path}: {err}") from None
    return extract_backbone_state(payload, prefer_ema=prefer_ema, origin=str(path))


def extract_backbone_state(payload: object, prefer_ema: bool = True, origin: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Find the backbone's tensors in a loaded checkpoint of any supported layout."""
    if not isinstance(payload, dict):
        raise UserError(f"{origin} holds a {type(payload).__name__}, not a state_dict")
    for key in ("state_dict", "model", "model_state_dict"):
        if key in payload and isinstance(payload[key], dict):
            payload = payload[key]
            break
    tensors = {k: v for k, v in payload.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise UserError(f"{origin} holds no tensors")
    for prefix in (("ema.module.", "backbone.") if prefer_ema else ("backbone.",)):
        if any(k.startswith(prefix) for k in tensors):
            return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    return {k.removeprefix("module."): v for k, v in tensors.items()}


@dataclass
class LoadReport:
    """What did not match when weights were loaded into a network."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    wrong_shape: list[str] = field(default_factory=list)
    dropped_classifier: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.unexpected or self.wrong_shape)


def classifier_keys(model: nn.Module) -> set[str]:
    """Names of the classifier's parameters (timm's ``get_classifier`` or a ``fc`` / ``classifier``)."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if head is None:
        head = getattr(model, "fc", None) or getattr(model, "classifier", None)
    if head is None:
        return set()
    ids = {id(p) for p in head.parameters()}
    return {name for name, p in model.named_parameters() if id(p) in ids}


def load_weights(
    model: nn.Module, state: dict[str, torch.Tensor], drop_classifier: bool = True, strict: bool = True, origin: str = "checkpoint"
) -> LoadReport:
    """Load ``state`` into ``model``; only the classifier may differ silently (new head).

    With ``strict`` any other missing, unexpected or wrongly shaped key raises a ``UserError``
    that names them.
    """
    own = model.state_dict()
    head = classifier_keys(model) if drop_classifier else set()
    report = LoadReport()
    usable = {}
    for key, value in state.items():
        if key not in own:
            report.unexpected.append(key)
        elif own[key].shape != value.shape:
            (report.dropped_classifier if key in head else report.wrong_shape).append(
                f"{key} {tuple(value.shape)} vs {tuple(own[key].shape)}"
            )
        else:
            usable[key] = value
    for key in own:
        if key not in state:
            (report.dropped_classifier if key in head else report.missing).append(key)
    if report.unexpected and drop_classifier:
        # a classifier stored under another name (e.g. ``head.fc`` vs ``fc``) is dropped as well
        stray = [k for k in report.unexpected if k.rsplit(".", 1)[0].split(".")[-1] in ("fc", "classifier", "head")]
        report.dropped_classifier += stray
        report.unexpected = [k for k in report.unexpected if k not in stray]
    if strict and not report.clean:
        raise UserError(mismatch_message(origin, report))
    model.load_state_dict(usable, strict=False)
    return report


def mismatch_message(origin: str, report: LoadReport, limit: int = 8) -> str:
    def show(items: list[str]) -> str:
        return ", ".join(items[:limit]) + (f" (+{len(items) - limit} more)" if len(items) > limit else "")

    parts = [
        f"{label}: {show(items)}"
        for label, items in (("missing", report.missing), ("unexpected", report.unexpected), ("wrong shape", report.wrong_shape))
        if items
    ]
    return f"weights in {origin} do not match the named architecture; " + "; ".join(parts)


def load_backbone_checkpoint(model: nn.Module, path: str | Path, drop_classifier: bool = True) -> LoadReport:
    """Read ``path`` safely and load its backbone weights into ``model`` (see ``load_weights``)."""
    return load_weights(model, read_state_dict(path), drop_classifier=drop_classifier, origin=str(path))
