"""Pseudo-labels of a whole dataset: sharded inference, gathered by sample index, filtered, balanced, saved.

``predict_probs(model, dataset)`` runs ``model`` (un-noised: eval mode, no augmentation) over a
dataset of ``{"image", "index"}`` items. Under ``torch.distributed`` every rank labels its shard
(``DistributedSampler``, no shuffle) and the shards are gathered and ordered **by sample index**,
the sampler's padded duplicates dropped, so 1 and N processes give the same ``{index, probs}``.
The same call serves a teacher-logit cache (``temperature`` and ``output="logits"``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from lit_effdl.errors import UserError
from lit_effdl.io import save_atomic

FORMAT_VERSION = 1


def dist_info() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` outside ``torch.distributed``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def model_fingerprint(module: nn.Module) -> str:
    """Short hash of a network's parameters and buffers (names, shapes, values): which teacher labeled."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(tuple(t.shape)).encode())
        digest.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return digest.hexdigest()[:16]


def predict_probs(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    dataset: Dataset,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    temperature: float = 1.0,
    output: Literal["probs", "logits"] = "probs",
    num_workers: int = 0,
) -> dict[str, torch.Tensor]:
    """``{"index": (N,) int64 sorted, "probs" (or "logits"): (N, C) float32}`` over ``dataset``.

    ``model`` maps a batch of ``image`` tensors (as the dataset yields them) to logits; an
    ``nn.Module`` is put in eval mode for the pass and restored after. Sharded over ranks when
    ``torch.distributed`` is initialised; every rank returns the full gathered result.
    """
    if len(dataset) == 0:
        raise UserError("the unlabeled set is empty: nothing to pseudo-label (lower the label budget)")
    rank, world = dist_info()
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=False) if world > 1 else None
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, sampler=sampler, num_workers=num_workers)
    was_training = model.training if isinstance(model, nn.Module) else None
    if isinstance(model, nn.Module):
        model.eval()
        if device is None:
            device = next((p.device for p in model.parameters()), torch.device("cpu"))
    device = torch.device(device or "cpu")
    # Rows go into buffers made once: hundreds of small per-batch tensors kept alive fragment the
    # heap, and peak RSS then grew ~1 MB per 1k images on large folders (bench suite "memory").
    count = len(sampler) if sampler is not None else len(dataset)
    index = values = None
    done = 0
    try:
        for batch in loader:
            with torch.inference_mode():  # cheaper than no_grad: no version counters or view tracking
                logits = model(batch["image"].to(device)).float() / temperature
                rows = logits if output == "logits" else logits.softmax(dim=-1)
            if values is None:  # normal tensors (made outside inference mode): callers may edit them
                values = torch.empty((count, rows.shape[1]), dtype=rows.dtype, device=rows.device)
                index = torch.empty(count, dtype=torch.long, device=rows.device)
            values[done:done + len(rows)] = rows
            index[done:done + len(rows)] = batch["index"]
            done += len(rows)
    finally:
        if was_training:
            model.train()
    if world > 1:
        index, values = _gather_by_index(index, values, world)
    else:
        order = torch.argsort(index)
        index, values = index[order], values[order]
    return {"index": index.cpu(), output: values.cpu()}


def _gather_by_index(index: torch.Tensor, values: torch.Tensor, world: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All ranks' rows, sorted by sample index, each index once (the sampler pads with repeats)."""
    # DistributedSampler gives every rank the same count, so plain all_gather fits.
    all_index = [torch.empty_like(index) for _ in range(world)]
    all_values = [torch.empty_like(values) for _ in range(world)]
    dist.all_gather(all_index, index.contiguous())
    dist.all_gather(all_values, values.contiguous())
    return unique_by_index(torch.cat(all_index), torch.cat(all_values))


def unique_by_index(index: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows sorted by sample index, each index once (the first of repeats: a distributed sampler
    pads its shards with copies of the first samples)."""
    order = torch.argsort(index, stable=True)
    index, values = index[order], values[order]
    keep = torch.ones_like(index, dtype=torch.bool)
    keep[1:] = index[1:] != index[:-1]
    return index[keep], values[keep]


# ---------------------------------------------------------------------------- selection


def filter_confident(probs: torch.Tensor, min_confidence: float) -> torch.Tensor:
    """Positions whose top probability is >= ``min_confidence``."""
    return torch.nonzero(probs.max(dim=-1).values >= min_confidence).flatten()


def balance_classes(labels: torch.Tensor, confidence: torch.Tensor, per_class: int,
                    num_classes: int) -> torch.Tensor:
    """Positions of a class-balanced selection, ``per_class`` of each class (Noisy Student):
    common classes keep their most confident ``per_class``, rare ones are duplicated (whole copies,
    then the most confident to fill). Classes with no image stay empty. Positions may repeat."""
    chosen = []
    for c in range(num_classes):
        members = torch.nonzero(labels == c).flatten()
        if len(members) == 0:
            continue
        members = members[torch.argsort(confidence[members], descending=True, stable=True)]
        copies, rest = divmod(per_class, len(members))
        chosen.append(torch.cat([members.repeat(copies), members[:rest]]))
    return torch.cat(chosen) if chosen else torch.zeros(0, dtype=torch.long)


@dataclass
class PseudoLabelSet:
    """Pseudo-labels over an unlabeled set, by sample index.

    ``index``/``targets``/``confidence`` list the selected (possibly duplicated, after balancing)
    samples; ``targets`` are hard labels (N,) or soft probabilities (N, C).
    """

    index: torch.Tensor
    targets: torch.Tensor
    confidence: torch.Tensor
    teacher_fingerprint: str
    num_unlabeled: int

    @property
    def hard_labels(self) -> torch.Tensor:
        return self.targets.argmax(-1) if self.targets.ndim == 2 else self.targets

    def weights(self) -> torch.Tensor:
        """(num_unlabeled,) multiplicity of each unlabeled sample in the selection (0 = dropped)."""
        return torch.bincount(self.index, minlength=self.num_unlabeled).float()

    def dense_targets(self, num_classes: int) -> torch.Tensor:
        """(num_unlabeled, C) probability rows (one-hot for hard labels), zeros where unselected."""
        dense = torch.zeros(self.num_unlabeled, num_classes)
        soft = self.targets if self.targets.ndim == 2 else nn.functional.one_hot(self.targets, num_classes).float()
        dense[self.index] = soft.float()
        return dense


def make_pseudo_labels(
    predictions: dict[str, torch.Tensor],
    teacher_fingerprint: str,
    min_confidence: float = 0.0,
    soft: bool = False,
    per_class: int | None = None,
) -> PseudoLabelSet:
    """Filter ``predict_probs`` output by confidence, optionally balance classes, keep soft or hard labels.

    ``per_class``: None = no balancing; 0 = balance to the mean kept count per class.
    """
    index, probs = predictions["index"], predictions["probs"]
    if len(index) and not torch.equal(index, torch.arange(len(index))):
        raise ValueError("predictions must cover indices 0..N-1 in order (as predict_probs returns them)")
    confidence, labels = probs.max(dim=-1)
    kept = filter_confident(probs, min_confidence)
    if per_class is not None and len(kept):
        num_classes = probs.shape[1]
        target = per_class or max(1, round(len(kept) / max(1, len(torch.unique(labels[kept])))))
        kept = kept[balance_classes(labels[kept], confidence[kept], target, num_classes)]
    targets = probs[kept] if soft else labels[kept]
    return PseudoLabelSet(index[kept], targets, confidence[kept], teacher_fingerprint, len(index))


def hidden_label_hits(labels: torch.Tensor, hidden: torch.Tensor,
                      keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(correct, measured)`` counts of pseudo-``labels`` against the images' hidden true labels,
    over the kept rows (``keep`` > 0; all without it) whose hidden label is known (``hidden`` >= 0,
    -1 for loose files): diagnostics only. ``measured`` 0 means nothing to measure. No host sync."""
    measured = hidden >= 0 if keep is None else (keep > 0) & (hidden >= 0)
    return (measured & (labels == hidden)).sum(), measured.sum()


# ---------------------------------------------------------------------------- files


def save_pseudo_labels(path: str | Path, labels: PseudoLabelSet) -> None:
    """Write ``labels`` to ``path`` whole or not at all."""
    save_atomic({
        "format_version": FORMAT_VERSION,
        "index": labels.index, "targets": labels.targets, "confidence": labels.confidence,
        "teacher_fingerprint": labels.teacher_fingerprint, "num_unlabeled": labels.num_unlabeled,
    }, path)


def load_pseudo_labels(path: str | Path, teacher_fingerprint: str | None = None,
                       num_unlabeled: int | None = None) -> PseudoLabelSet:
    """Read a pseudo-label file; refuse one made by another teacher or for another unlabeled set."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format_version") != FORMAT_VERSION:
        raise UserError(f"pseudo-label file {path} has format {payload.get('format_version')}, expected {FORMAT_VERSION}")
    labels = PseudoLabelSet(payload["index"], payload["targets"], payload["confidence"],
                            payload["teacher_fingerprint"], int(payload["num_unlabeled"]))
    if teacher_fingerprint is not None and labels.teacher_fingerprint != teacher_fingerprint:
        raise UserError(
            f"pseudo-label file {path} was made by teacher {labels.teacher_fingerprint}, not by the current "
            f"teacher {teacher_fingerprint}: delete the file to relabel, or restore that teacher's checkpoint"
        )
    if num_unlabeled is not None and labels.num_unlabeled != num_unlabeled:
        raise UserError(
            f"pseudo-label file {path} covers {labels.num_unlabeled} unlabeled images, the data has "
            f"{num_unlabeled}: it belongs to another label split; delete it to relabel"
        )
    return labels
