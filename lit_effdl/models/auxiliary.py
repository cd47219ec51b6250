"""Classifier heads: the one lookup of a network's classifier and auxiliary classifiers (GoogLeNet,
Inception-v3), and the one place that splits a training output into main and auxiliary logits and
adds the auxiliary losses.

torchvision's GoogLeNet returns ``GoogLeNetOutputs(logits, aux_logits2, aux_logits1)`` in training
and a plain logits tensor in evaluation; torchvision's Inception-v3 returns
``InceptionOutputs(logits, aux_logits)``; timm's ``inception_v3(aux_logits=True)`` returns a
``(logits, aux)`` tuple. Every method turns any of those into a loss with ``loss_with_aux``.
"""

from __future__ import annotations

from typing import Callable, Sequence

from torch.utils.data import DataLoader, Dataset

import torch
from torch import nn

from lit_effdl.errors import UserError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

DEFAULT_AUX_WEIGHT = 0.3  # GoogLeNet paper: auxiliary losses weighted by 0.3
AUX_HEADS = ("aux1", "aux2", "AuxLogits")  # GoogLeNet / Inception auxiliary classifiers


def classifier_heads(model: nn.Module) -> list[nn.Module]:
    """The classifier (timm's ``get_classifier``, else ``fc`` / ``classifier``) followed by the
    auxiliary classifiers; an empty list when the network has no recognisable classifier."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if head is None:
        head = getattr(model, "fc", None) or getattr(model, "classifier", None)
    if not isinstance(head, nn.Module):
        return []
    return [head, *(getattr(model, name) for name in AUX_HEADS if isinstance(getattr(model, name, None), nn.Module))]


def reset_head(model: nn.Module, num_classes: int) -> None:
    """A fresh classifier with ``num_classes`` outputs (timm's ``reset_classifier`` where it exists)."""
    if hasattr(model, "reset_classifier"):
        model.reset_classifier(num_classes)
        heads = classifier_heads(model)[1:]
    else:
        heads = classifier_heads(model)
    for head in heads:
        for module in head.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()


def pooled_features(net: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The pooled pre-logit features of a timm-style network: its classifier's input
    (``forward_head(forward_features(images), pre_logits=True)``)."""
    return net.forward_head(net.forward_features(images), pre_logits=True)


@torch.no_grad()
def head_inputs(net: nn.Module, dataset: Dataset, prepare: Callable[[torch.Tensor], torch.Tensor],
                device: torch.device) -> torch.Tensor:
    """The pooled pre-logit features (a timm model's ``forward_head(..., pre_logits=True)``) of every
    item of ``dataset`` (items ``{"image", "index"}``), in eval mode, as rows indexed by ``index``;
    the caller restores the network's mode."""
    if not (hasattr(net, "forward_features") and hasattr(net, "forward_head")):
        raise UserError(f"cache_features needs a timm-style backbone; {type(net).__name__} is not")
    net.eval()
    feats = None
    for batch in DataLoader(dataset, batch_size=256, shuffle=False):
        out = pooled_features(net, prepare(batch["image"].to(device)))
        if feats is None:
            feats = out.new_zeros(len(dataset), out.shape[1])
        feats[batch["index"].to(device)] = out
    return feats


def split_aux(output: torch.Tensor | Sequence[torch.Tensor | None]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``(main_logits, [aux_logits, ...])`` of a network output; a plain tensor has no auxiliaries."""
    if isinstance(output, torch.Tensor):
        return output, []
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0], [aux for aux in output[1:] if isinstance(aux, torch.Tensor)]
    raise TypeError(f"cannot find logits in a network output of type {type(output).__name__}")


def loss_with_aux(
    output: torch.Tensor | Sequence[torch.Tensor | None],
    targets: torch.Tensor,
    loss_fn: LossFn,
    aux_weight: float = DEFAULT_AUX_WEIGHT,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, main_logits)`` with ``loss = loss_fn(main) + aux_weight * sum(loss_fn(aux_i))``."""
    logits, aux = split_aux(output)
    loss = loss_fn(logits, targets)
    for aux_logits in aux:
        loss = loss + aux_weight * loss_fn(aux_logits, targets)
    return loss, logits
