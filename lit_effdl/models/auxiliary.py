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

import torch
from torch import nn

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
