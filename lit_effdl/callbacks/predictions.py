"""`PredictionsCSV`: ``lit-effdl predict`` writes one CSV row per image (path, label, confidence, top-5)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info

from lit_effdl.io import atomic_path
from lit_effdl.pseudo_labels import unique_by_index


class PredictionsCSV(BasePredictionWriter):
    """Gather ``{"probs", "index"}`` predictions and write ``predictions.csv`` in the run folder.

    Each rank writes its part; rank 0 merges the parts by sample index (dropping the distributed
    sampler's padded duplicates) and writes the file atomically.
    """

    def __init__(self, filename: str = "predictions.csv", top_k: int = 5):
        super().__init__(write_interval="epoch")
        self.filename = filename
        self.top_k = top_k
        self.path: Path | None = None

    def write_on_epoch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: Sequence[Any], batch_indices: Any
    ) -> None:
        batches = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        probs = torch.cat([b["probs"] for b in batches]) if batches else torch.zeros(0, 1)
        index = torch.cat([b["index"] for b in batches]) if batches else torch.zeros(0, dtype=torch.long)
        if trainer.world_size > 1:
            gathered = pl_module.all_gather({"probs": probs.to(pl_module.device), "index": index.to(pl_module.device)})
            probs, index = gathered["probs"].flatten(0, 1).cpu(), gathered["index"].flatten(0).cpu()
        if not trainer.is_global_zero:
            return
        index, probs = unique_by_index(index, probs)
        self.path = Path(trainer.log_dir or ".") / self.filename
        write_predictions(self.path, index, probs, trainer.datamodule, self.top_k)
        rank_zero_info(f"predictions written to {self.path}")


def write_predictions(path: Path, index: torch.Tensor, probs: torch.Tensor, datamodule: Any, top_k: int) -> None:
    """One row per sample: path (or id), label name, confidence, top-k as ``name:prob`` pairs."""
    names = list(getattr(datamodule, "class_names", None) or [str(k) for k in range(probs.shape[1])])
    source = getattr(datamodule, "predict_source", None)
    k = min(top_k, probs.shape[1])
    top_probs, top_labels = probs.topk(k, dim=1)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "confidence", f"top{top_k}"])
        for i, p_row, l_row in zip(index.tolist(), top_probs.tolist(), top_labels.tolist()):
            where = source.describe(i) if source is not None else str(i)
            top = " ".join(f"{names[l]}:{p:.4f}" for l, p in zip(l_row, p_row))
            writer.writerow([where, names[l_row[0]], f"{p_row[0]:.6f}", top])
