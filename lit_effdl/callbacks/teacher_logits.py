"""`TeacherLogitCache`: the teacher runs once over the train images; training reads its logits by index."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from lit_effdl.augment import is_random_spec
from lit_effdl.errors import UserError
from lit_effdl.io import save_atomic
from lit_effdl.pseudo_labels import predict_probs

CACHE_FILE = "teacher_logits.pt"
PARTS = ("labeled", "unlabeled")


class TeacherLogitCache(Callback):
    """Teacher logits of every train image, fp16, indexed like the batches' ``index``.

    Valid only when the trained views draw no random numbers (checked when fit is set up). The
    file (``path``, default the run folder's ``teacher_logits.pt``) is keyed by the teacher file,
    the split and the views' specs, and reused by a later fit with the same key. The pass uses
    ``predict_probs`` (sharded over ranks, gathered by index): ``trainer.predict`` would reset the
    running fit loop. Needs ``pl_module.teacher``, ``pl_module.prepare`` and ``hparams.num_classes``.

    Args:
        teacher_backbone: the teacher's backbone name (part of the key).
        teacher_checkpoint: the teacher's file (its path, size and mtime are part of the key).
        unlabeled_view: the unlabeled view trained on: ``weak`` or ``strong``.
        use_unlabeled: whether unlabeled batches are distilled (with ``data.unlabeled_ratio`` > 0).
        path: where the cache is read and written.
    """

    def __init__(self, teacher_backbone: str, teacher_checkpoint: str | None, unlabeled_view: str,
                 use_unlabeled: bool, path: str | None = None):
        self.teacher_backbone = teacher_backbone
        self.teacher_checkpoint = teacher_checkpoint
        self.unlabeled_view = unlabeled_view
        self.use_unlabeled = use_unlabeled
        self.path = path
        self.logits: dict[str, torch.Tensor] | None = None

    def lookup(self, indices: dict[str, torch.Tensor | None], device: torch.device) -> torch.Tensor:
        """The cached float32 logits of each part's (``labeled``, ``unlabeled``; None: skipped) sample
        indices, concatenated in that order, on ``device``."""
        rows = [self.logits[part][index.to(self.logits[part].device)] for part, index in indices.items()
                if index is not None]
        return torch.cat(rows).to(device).float()

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        random = {name: spec for name, spec in self.specs(datamodule(trainer)).items() if is_random_spec(spec)}
        if random:
            shown = ", ".join(f"{k}='{v}'" for k, v in random.items())
            raise UserError(f"cache_teacher_logits is not valid with a random pipeline ({shown}): cached "
                            f"teacher logits would not match the augmented images; set {' and '.join(random)} "
                            f"to 'none', or turn the cache off (online distillation)")

    def specs(self, dm: Any) -> dict[str, str | None]:
        """The data options of the views whose teacher logits are cached, with their specs."""
        train_specs = dm.train_specs()
        specs = {"data.labeled_augment": train_specs["labeled"]}
        if dm.unlabeled_ratio > 0 and self.use_unlabeled:
            specs[f"data.unlabeled_{self.unlabeled_view}_augment"] = train_specs[self.unlabeled_view]
        return specs

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = datamodule(trainer)
        path = Path(self.path).expanduser() if self.path else Path(trainer.log_dir or ".") / CACHE_FILE
        key = self.key(dm)
        if path.is_file():
            stored = torch.load(path, map_location="cpu", weights_only=True)
            if stored.get("key") == key:
                self.logits = {part: stored[part].to(pl_module.device) for part in PARTS}
                return
        cache = {"key": key, **self.compute(dm, pl_module)}
        if trainer.is_global_zero:
            save_atomic(cache, path)
        self.logits = {part: cache[part].to(pl_module.device) for part in PARTS}

    def key(self, dm: Any) -> dict[str, Any]:
        """What the cached logits depend on: teacher file, split, set sizes and specs."""
        ckpt = self.teacher_checkpoint
        stat = os.stat(ckpt) if ckpt and os.path.isfile(ckpt) else None
        return {
            "teacher": f"{self.teacher_backbone}|{ckpt}|{stat.st_size if stat else ''}|{stat.st_mtime_ns if stat else ''}",
            "split": dm.split.fingerprint(), "labeled": len(dm.inference_dataset("labeled")),
            "unlabeled": len(dm.inference_dataset("unlabeled")), "specs": str(self.specs(dm)),
        }

    def compute(self, dm: Any, pl_module: L.LightningModule) -> dict[str, torch.Tensor]:
        """One teacher pass over each part (the unlabeled one only when trained on; zeros otherwise)."""
        trained_unlabeled = len(self.specs(dm)) > 1
        out = {}
        for part, view, used in (("labeled", "labeled", True), ("unlabeled", self.unlabeled_view, trained_unlabeled)):
            dataset = dm.inference_dataset(part, view if used else None)
            logits = torch.zeros(len(dataset), pl_module.hparams.num_classes, dtype=torch.float16)
            if len(dataset) and used:
                result = predict_probs(lambda images: pl_module.teacher(pl_module.prepare(images)), dataset,
                                       batch_size=dm.eval_batch_size, device=pl_module.device, output="logits")
                logits[result["index"]] = result["logits"].half()
            out[part] = logits
        return out


def datamodule(trainer: L.Trainer) -> Any:
    """The fit's lit-effdl data module (it has the public interface the cache asks)."""
    dm = getattr(trainer, "datamodule", None)
    if dm is None or not hasattr(dm, "train_specs"):
        raise UserError("cache_teacher_logits needs a lit-effdl data module (LabelBudgetDataModule)")
    return dm
