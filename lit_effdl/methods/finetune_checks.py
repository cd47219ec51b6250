"""``Finetune``'s argument checks, one clear message each (kept out of the method file, which reads as the recipe)."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn

from lit_effdl.errors import UserError
from lit_effdl.models.loading import NAMED_WEIGHTS


def validate_finetune(mode: str, probe_epochs: int, checkpoint_path: str | None, head_lr: float | None,
                      backbone_lr: float | None, layer_decay: float | None, cache_features: bool,
                      kwargs: dict[str, Any]) -> None:
    """Refuse a bad ``Finetune`` argument (``kwargs``: those for ``BaseMethod``) before anything is built."""
    if mode not in ("linear_probe", "full"):
        hint = " (the former 'gradual' is 'full' with probe_epochs)" if mode == "gradual" else ""
        raise UserError(f"mode='{mode}' is not valid: use 'linear_probe' or 'full'{hint}")
    if mode == "linear_probe" and backbone_lr is not None:
        raise UserError(f"backbone_lr={backbone_lr} is given in linear_probe mode, where the backbone is frozen: "
                        f"remove it, or use mode 'full'")
    for name, value in (("head_lr", head_lr), ("backbone_lr", backbone_lr)):
        if value is not None and value < 0:
            raise UserError(f"{name}={value} is not valid: use a learning rate >= 0")
    if isinstance(probe_epochs, bool) or not isinstance(probe_epochs, int) or probe_epochs < 0:
        raise UserError(f"probe_epochs={probe_epochs!r} is not valid: use 0 (no probe phase) or a number of epochs")
    if layer_decay is not None and not (0.0 < layer_decay <= 1.0 and mode != "linear_probe" and backbone_lr is None):
        raise UserError(f"layer_decay={layer_decay} is not valid: use a value in (0, 1] with mode full "
                        f"and no backbone_lr (layers scale head_lr)")
    if cache_features and mode != "linear_probe":
        raise UserError(f"cache_features=true needs mode='linear_probe' (a frozen backbone), got mode='{mode}'")
    if checkpoint_path and kwargs.get("init_from"):
        raise UserError(f"checkpoint_path={checkpoint_path!r} and init_from={kwargs['init_from']!r} both give the "
                        "backbone's weights: keep one")
    if checkpoint_path and str(checkpoint_path) in NAMED_WEIGHTS:
        arch = NAMED_WEIGHTS[str(checkpoint_path)].architecture
        if kwargs.get("backbone", "small_cnn") != arch:
            raise UserError(f"weights '{checkpoint_path}' fit backbone '{arch}', not '{kwargs.get('backbone', 'small_cnn')}'")


def check_probe_phase(probe_epochs: int, layer_decay: float | None, trainer: L.Trainer) -> None:
    """At fit start, LP-FT (``full`` with ``probe_epochs``) in this trainer: refused where the probe phase
    cannot hold the backbone, warned about where it fills the whole fit."""
    if trainer.world_size > 1 and layer_decay is not None:
        raise UserError(f"layer_decay={layer_decay} with probe_epochs={probe_epochs} runs on one device: under DDP "
                        "the probe phase holds the backbone by its learning rate, which timm's layer groups share "
                        "with the head; set probe_epochs: 0 or use one device")
    if 0 < (trainer.max_epochs or 0) <= probe_epochs:
        rank_zero_warn(f"probe_epochs={probe_epochs} fills the whole fit (max_epochs={trainer.max_epochs}): the "
                       "backbone never trains; lower probe_epochs, or use mode linear_probe")
