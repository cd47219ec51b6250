"""Frozen teachers: built for distillation, or loaded as a trained run's evaluated network."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from lit_effdl.errors import UserError
from lit_effdl.models.factory import create_backbone
from lit_effdl.models.inputs import normalise_images
from lit_effdl.models.loading import (
    classifier_keys,
    extract_backbone_state,
    load_weights,
    read_checkpoint,
    read_state_dict,
)


class FrozenTeacher(nn.Module):
    """A network that stays in eval mode whatever ``.train()`` calls reach it, with no gradients.

    Lightning puts the LightningModule in train mode every epoch; ``nn.Module.train`` recurses into
    children, so overriding ``train`` here keeps dropout off and BatchNorm statistics frozen.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> "FrozenTeacher":
        return super().train(False)

    @torch.no_grad()  # not inference_mode: its outputs feed the student's autograd graph as targets
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(m.training for m in self.modules()):  # someone set ``.training`` directly
            self.train(False)
        return self.net(x)


class NormalisedTeacher(FrozenTeacher):
    """A frozen network that takes the loader's images (uint8 0..255 or float 0..1) and normalises
    them as its training run did. The statistics are not in ``state_dict``: its keys are the net's."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__(net)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return super().forward(normalise_images(images, self.mean, self.std))


def build_teacher(
    backbone: str,
    num_classes: int,
    in_chans: int,
    checkpoint: str | None = None,
    pretrained: bool = False,
    backbone_kwargs: dict[str, Any] | None = None,
    load: bool = True,
) -> FrozenTeacher:
    """The teacher ``backbone``, frozen; with ``load`` its weights (``checkpoint``, else timm's
    ``pretrained`` ones) are read and their class count checked against ``num_classes``."""
    use_pretrained = bool(pretrained and load and not checkpoint)
    if use_pretrained:
        check_pretrained_classes(backbone, num_classes)
    net = create_backbone(backbone, num_classes, pretrained=use_pretrained, in_chans=in_chans, **(backbone_kwargs or {}))
    if load and checkpoint:
        if not Path(checkpoint).expanduser().is_file():
            raise UserError(f"teacher_checkpoint {checkpoint} is not a file: give the teacher's "
                            f".ckpt, .pt/.pth or .safetensors (e.g. from scripts/distill_demo.py)")
        state = read_state_dict(checkpoint)
        check_teacher_classes(net, state, num_classes, checkpoint)
        load_weights(net, state, drop_classifier=False,
                     origin=f"teacher_checkpoint {checkpoint} (teacher_backbone '{backbone}')")
    return FrozenTeacher(net)


def load_evaluated_network(path: str | Path, headless_ok: bool = False) -> NormalisedTeacher:
    """The evaluated network of a lit-effdl checkpoint (the EMA copy when the run had one), frozen,
    taking the loader's images and normalising them with the run's ``input_mean`` / ``input_std``.

    A checkpoint without a classifier (SimCLR's backbone) loads only with ``headless_ok`` (the
    network then outputs its pooled features); otherwise it is refused: it predicts no class."""
    payload = read_checkpoint(path, setting="teacher_checkpoint")
    hp = payload.get("hyper_parameters") if isinstance(payload, dict) else None
    if not hp or "backbone" not in hp or "num_classes" not in hp:
        raise UserError(f"teacher_checkpoint {path} is not a lit-effdl checkpoint (no hyper_parameters "
                        "with backbone and num_classes): give a .ckpt written by lit-effdl fit")
    net = create_backbone(hp["backbone"], hp["num_classes"], in_chans=hp.get("in_chans", 3),
                          **(hp.get("backbone_kwargs") or {}))
    state = extract_backbone_state(payload, prefer_ema=True, origin=str(path))
    head = sorted(classifier_keys(net))
    if head and not any(key in state for key in head):
        if not headless_ok or not hasattr(net, "reset_classifier"):
            raise UserError(f"checkpoint {path} has no classifier ('{head[0]}' missing: a self-supervised run such as "
                            "SimCLR) so it predicts no class: fine-tune it first (--model.init_args.init_from "
                            f"{path}), or use it for embeddings only")
        net.reset_classifier(0)
    load_weights(net, state, drop_classifier=False, origin=f"teacher_checkpoint {path}")
    return NormalisedTeacher(net, hp.get("input_mean", (0.5,)), hp.get("input_std", (0.5,)))


def check_teacher_classes(net: nn.Module, state: dict[str, torch.Tensor], num_classes: int, origin: str) -> None:
    """A clear message when the teacher checkpoint's classifier has another class count."""
    for key in classifier_keys(net):
        if key in state and state[key].ndim >= 1 and state[key].shape[0] != num_classes:
            raise UserError(f"teacher_checkpoint {origin} has {state[key].shape[0]} classes ('{key}' "
                            f"{tuple(state[key].shape)}) but the student has num_classes={num_classes}: "
                            f"teacher and student must predict the same classes")


def check_pretrained_classes(name: str, num_classes: int) -> None:
    """timm's pretrained head must already have ``num_classes`` outputs to teach anything."""
    try:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(name)
    except Exception:  # not a timm name, or timm without pretrained configs: nothing to check
        cfg = None
    classes = getattr(cfg, "num_classes", None) if cfg is not None else None
    if classes is not None and classes != num_classes:
        raise UserError(f"teacher_pretrained '{name}' predicts {classes} classes but the student has "
                        f"num_classes={num_classes}: fine-tune the teacher on your classes first and pass "
                        f"its teacher_checkpoint")
