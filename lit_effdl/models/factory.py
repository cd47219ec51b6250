"""`create_backbone(name, ...)`: this project's small-input nets, torchvision's GoogLeNet, or any timm model."""

from __future__ import annotations

import difflib
import os
import re
from functools import partial
from typing import Any, Callable

from torch import nn

from lit_effdl.errors import UserError
from lit_effdl.models.cifar import CifarResNet, SmallCNN, WideResNet
from lit_effdl.models.mlp import MLP, mlp_widths

# name -> constructor(num_classes, in_chans, drop_rate, drop_path_rate, **kwargs)
LOCAL_MODELS: dict[str, Callable[..., nn.Module]] = {
    "small_cnn": partial(SmallCNN, width=32),
    "wrn_28_2": partial(WideResNet, depth=28, widen=2),
    "wrn_28_8": partial(WideResNet, depth=28, widen=8),
    "cifar_resnet18": partial(CifarResNet, layers=(2, 2, 2, 2)),
    "cifar_resnet34": partial(CifarResNet, layers=(3, 4, 6, 3)),
}
_SMALL_CNN_WIDTH = re.compile(r"^small_cnn_w(\d+)$")  # small_cnn_w16, small_cnn_w64, ...
TORCHVISION_MODELS = ("googlenet",)


def _local_constructor(name: str) -> Callable[..., nn.Module] | None:
    if name in LOCAL_MODELS:
        return LOCAL_MODELS[name]
    match = _SMALL_CNN_WIDTH.match(name)
    if match:
        return partial(SmallCNN, width=int(match.group(1)))
    widths = mlp_widths(name)  # mlp_1200_1200, mlp_800_800, mlp_30...
    return partial(MLP, widths) if widths is not None else None


def available_backbones() -> list[str]:
    """Local names, torchvision names and every timm architecture name."""
    import timm

    local = sorted(LOCAL_MODELS) + ["small_cnn_w<width>", "mlp_<width>[_<width>...]"]
    return local + list(TORCHVISION_MODELS) + timm.list_models()


def create_backbone(
    name: str,
    num_classes: int,
    pretrained: bool = False,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    deformable: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Build a classifier network by name with ``num_classes`` outputs.

    Local nets for 32x32 inputs (``small_cnn``, ``small_cnn_w16``, ``wrn_28_2``, ``cifar_resnet18``...),
    MLPs (``mlp_800_800``: any widths; ``backbone_kwargs`` ``input_drop_rate``, ``max_norm``, ``image_size``),
    ``googlenet`` from torchvision, else any ``timm`` model (``resnet18``, ``densenet121``,
    ``seresnet18``, ``efficientnet_b0``...). ``drop_rate`` is dropout before the classifier,
    ``drop_path_rate`` stochastic depth where the architecture has residual branches.
    ``deformable`` swaps the last stage's 3x3 convolutions for deformable ones (ResNet-like nets).
    """
    if deformable:
        from lit_effdl.models.deformable import swap_deformable

        model = create_backbone(name, num_classes, pretrained, in_chans, drop_rate, drop_path_rate, **kwargs)
        swap_deformable(model)
        return model
    if num_classes < 1:
        raise UserError(f"num_classes={num_classes} is not valid: use a positive integer")
    local = _local_constructor(name)
    if local is not None:
        if pretrained:
            raise UserError(f"backbone '{name}' has no pretrained weights: pass a checkpoint_path instead")
        if drop_path_rate and name.startswith(("small_cnn", "mlp_")):
            raise UserError(f"backbone '{name}' has no residual branches: drop_path_rate must be 0")
        extra = {} if name.startswith(("small_cnn", "mlp_")) else {"drop_path_rate": drop_path_rate}
        return local(num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate, **extra, **kwargs)
    if name in TORCHVISION_MODELS:
        return _torchvision_googlenet(num_classes, pretrained, in_chans, drop_rate, **kwargs)
    import timm

    if not timm.is_model(name):
        raise UserError(unknown_backbone_message(name))
    if pretrained:
        _check_pretrained_reachable(name)
    return timm.create_model(
        name,
        pretrained=pretrained,
        num_classes=num_classes,
        in_chans=in_chans,
        drop_rate=drop_rate,
        drop_path_rate=drop_path_rate or None,
        **kwargs,
    )


def unknown_backbone_message(name: str) -> str:
    names = available_backbones()
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    hint = f" closest valid names: {', '.join(close)};" if close else ""
    return (
        f"unknown backbone '{name}':{hint} local nets are {', '.join(sorted(LOCAL_MODELS))}, "
        f"small_cnn_w<width>, mlp_<width>[_<width>...], googlenet, or any of timm.list_models()"
    )


def _check_pretrained_reachable(name: str) -> None:
    """Fail in seconds, not after a minute of hub retries, when weights cannot be fetched: a warm
    cache passes; else ``HF_HUB_OFFLINE`` or a hub host that does not answer in 3 s is an error."""
    import socket
    from urllib.parse import urlparse

    import timm
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg else None
    cached = False
    if hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = any(
                isinstance(try_to_load_from_cache(hub_id, f), str) for f in ("model.safetensors", "pytorch_model.bin")
            )
        except Exception:
            cached = False
    if cached:
        return
    hint = f"pass checkpoint_path=<local weights file> instead (timm {timm.__version__})"
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise UserError(f"pretrained weights for '{name}' are not in the local cache and HF_HUB_OFFLINE is set: {hint}")
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError as err:
        raise UserError(
            f"pretrained weights for '{name}' are not cached and {host} cannot be reached ({err}): {hint}"
        ) from None


def _torchvision_googlenet(num_classes: int, pretrained: bool, in_chans: int, drop_rate: float, **kwargs) -> nn.Module:
    from torchvision.models import googlenet

    if pretrained:
        raise UserError("pretrained torchvision googlenet needs a download: pass checkpoint_path instead")
    if in_chans != 3:
        raise UserError(f"googlenet takes 3-channel input, got in_chans={in_chans}: use data.channels: 3")
    kwargs.setdefault("aux_logits", True)
    kwargs.setdefault("init_weights", True)
    return googlenet(weights=None, num_classes=num_classes, dropout=drop_rate or 0.2, **kwargs)
