"""Finetune: a pretrained backbone with a new head, trained as a linear probe or fully (LP-FT: the head first)."""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import BaseFinetuning, Callback
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from lit_effdl.augment.pipelines import is_random_spec
from lit_effdl.callbacks.finetuning import GradualUnfreeze, after_start
from lit_effdl.methods.base import BaseMethod, decay_groups, layer_decay_groups, warmup_cosine
from lit_effdl.methods.finetune_checks import check_probe_phase, validate_finetune
from lit_effdl.models.auxiliary import classifier_heads, head_inputs, reset_head
from lit_effdl.errors import UserError
from lit_effdl.models.loading import LoadReport, load_pretrained


class Finetune(BaseMethod):
    """Transfer a pretrained backbone: a new head on top, then a linear probe or LP-FT.

    Args:
        mode: ``linear_probe`` (backbone frozen, its BatchNorm kept in eval, only the head trains) or
            ``full``: LP-FT (Kumar et al. 2022): the head alone for ``probe_epochs`` (as the probe), then
            everything, the backbone at ``backbone_lr`` after its own warm-up (a random head's first
            gradients would distort the pretrained features).
        probe_epochs: ``full``: epochs of the head-only phase; 0 trains everything from the first step.
        checkpoint_path: local weights: a lit-effdl checkpoint, a timm / torchvision state_dict, a
            ``.safetensors`` file, or a named package (``efficientnet_lite0_imagenet``); ``init_from``
            (every method) reads the same files in the backbone's own names only (no package, no key map).
        checkpoint_key_map: how the file's keys map onto the backbone: null (same names), ``by_order``
            (foreign names, every shape must match) or a ``{their_prefix: our_prefix}`` map.
        head_lr: learning rate of the new head (default: ``lr``).
        backbone_lr: learning rate of the backbone in ``full`` (default: ``lr / 10``).
        layer_decay: timm layer-wise LR decay (layer k of L trains at ``head_lr * layer_decay**(L-k)``).
        freeze_bn: keep the backbone's BatchNorm statistics fixed (eval mode) once it trains too;
            always on while it is held (``linear_probe``, the probe phase).
        cache_features: ``linear_probe`` with a deterministic train pipeline: compute backbone features
            once and train the head on them (an epoch costs a head's forward and backward).
        label_smoothing: weight of the uniform distribution mixed into the targets.
        **kwargs: everything ``BaseMethod`` takes (backbone, pretrained, lr, schedule, EMA...).

    Example::

        lit-effdl fit --config configs/digits/finetune_lite0_probe.yaml --test_after_fit true
    """

    def __init__(
        self,
        mode: Literal["linear_probe", "full"] = "full",
        probe_epochs: int = 1,
        checkpoint_path: str | None = None,
        checkpoint_key_map: dict[str, str] | Literal["by_order"] | None = None,
        head_lr: float | None = None,
        backbone_lr: float | None = None,
        layer_decay: float | None = None,
        freeze_bn: bool = False,
        cache_features: bool = False,
        label_smoothing: float = 0.0,
        **kwargs,
    ):
        validate_finetune(mode, probe_epochs, checkpoint_path, head_lr, backbone_lr, layer_decay, cache_features, kwargs)
        super().__init__(**kwargs)
        self._feature_cache: torch.Tensor | None = None
        if mode == "linear_probe":
            self.freeze_body()

    def build_backbone(self) -> nn.Module:
        """Create the named net, load ``checkpoint_path`` (classifier dropped), put a new head on it."""
        hp = self.hparams
        model = super().build_backbone()
        self.load_report: LoadReport | None = (
            load_pretrained(model, hp.checkpoint_path, hp.checkpoint_key_map) if hp.checkpoint_path else None)
        reset_head(model, hp.num_classes)
        return model

    @property
    def heads(self) -> list[nn.Module]:  # the new classifier, then any auxiliary classifiers
        heads = classifier_heads(self.backbone)
        if not heads:
            raise UserError(f"cannot find the classifier of {type(self.backbone).__name__}: Finetune needs a timm-style model")
        return heads

    def body_modules(self) -> list[nn.Module]:
        """The backbone's modules that own parameters or buffers, without the heads' (``BaseFinetuning`` style)."""
        head_ids = {id(m) for head in self.heads for m in head.modules()}
        return [m for m in BaseFinetuning.flatten_modules(self.backbone) if id(m) not in head_ids]

    def body_parameters(self) -> list[nn.Parameter]:
        return [p for module in self.body_modules() for p in module.parameters(recurse=False)]

    def body_norms(self) -> list[nn.Module]:
        return [m for m in self.body_modules() if isinstance(m, _BatchNorm)]

    @property
    def body_frozen(self) -> bool:
        return not all(p.requires_grad for p in self.body_parameters())

    @property
    def probing(self) -> bool:
        """Whether the body is held fixed now: always in ``linear_probe``, for ``probe_epochs`` in ``full``."""
        return self.hparams.mode == "linear_probe" or self.current_epoch < self.hparams.probe_epochs

    def freeze_body(self) -> None:
        """``BaseFinetuning.freeze(body, train_bn=False)``, module by module: a parent owning parameters
        (a ViT's position embedding) would otherwise bring its head along."""
        for module in self.body_modules():
            BaseFinetuning.freeze_module(module)

    def train(self, mode: bool = True) -> "Finetune":
        """Lightning's mode switches never put a held (or ``freeze_bn``) backbone's BatchNorm in training mode."""
        super().train(mode)
        for norm in self.body_norms() if mode and (self.probing or self.hparams.freeze_bn) else []:
            norm.eval()
        return self

    @property
    def lp_ft(self) -> bool:
        """``full`` with a probe phase (LP-FT)."""
        return self.hparams.mode == "full" and self.hparams.probe_epochs > 0

    def configure_callbacks(self) -> list[Callback]:
        return super().configure_callbacks() + ([GradualUnfreeze(self.hparams.probe_epochs)] if self.lp_ft else [])

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule
        classes = getattr(datamodule, "num_classes", None)
        if classes is not None and classes != self.hparams.num_classes:
            raise UserError(f"model num_classes={self.hparams.num_classes} disagrees with the data module's {classes} "
                            f"classes: leave num_classes to the data module (the CLI links it) or set it to {classes}")
        if stage == "fit" and self.lp_ft:
            check_probe_phase(self.hparams.probe_epochs, self.hparams.layer_decay, self.trainer)
        if stage == "fit" and self.hparams.cache_features:
            spec = datamodule.train_specs()["labeled"] if datamodule is not None else None
            if datamodule is None or is_random_spec(spec):
                raise UserError(f"cache_features=true needs a deterministic train pipeline, got "
                                f"data.labeled_augment={spec!r}: set data.labeled_augment: none")

    def on_train_start(self) -> None:
        if self.hparams.cache_features and self._feature_cache is None:
            dataset = self.trainer.datamodule.inference_dataset("labeled", "labeled")
            self._feature_cache = head_inputs(self.backbone, dataset, self.prepare, self.device)
            self.train()

    def on_train_epoch_start(self) -> None:
        self.train()  # re-apply the BatchNorm policy whatever mode Lightning restored

    AUGMENTED_VIEWS = ("labeled",)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        labeled = self.labeled_part(batch)
        if self._feature_cache is not None:
            feats = F.dropout(self._feature_cache[labeled["index"]], self.hparams.drop_rate, training=True)
            output = self.heads[0](feats)
        else:
            output = self(labeled["image"])
        loss = self.classification_loss(output, labeled["target"], self.hparams.label_smoothing)
        self.log_train("loss", loss, batch_size=labeled["target"].shape[0], prog_bar=True)
        return loss

    def param_groups(self) -> list[dict[str, Any]]:
        """``head`` (+``_no_decay``) and, but in ``linear_probe``, ``backbone`` groups (or timm layer groups)."""
        hp = self.hparams
        head_lr = hp.head_lr or hp.lr
        heads = nn.ModuleList(self.heads)  # a view for the group helper; the heads stay where they are
        head_groups = decay_groups(heads, "head", head_lr, hp.weight_decay)
        if hp.mode == "linear_probe":
            return head_groups
        if hp.layer_decay is not None:
            return layer_decay_groups(self.backbone, head_lr, hp.weight_decay, hp.layer_decay)
        backbone_lr = hp.backbone_lr if hp.backbone_lr is not None else hp.lr / 10
        return decay_groups(self.backbone, "backbone", backbone_lr, hp.weight_decay, skip=heads) + head_groups

    def has_lr_schedule(self) -> bool:  # LP-FT: the backbone's LR is 0 in the probe phase
        return super().has_lr_schedule() or self.lp_ft

    def lr_factor(self, group: dict[str, Any], total: int, per_epoch: int) -> Callable[[int], float]:
        """LP-FT: the backbone's groups get 0 in the probe phase, then their own warm-up (at least an
        epoch) + cosine to the end of the fit; every other group the base schedule."""
        hp = self.hparams
        if not (self.lp_ft and group["name"].startswith("backbone")):
            return super().lr_factor(group, total, per_epoch)
        start = hp.probe_epochs * per_epoch
        warmup = int(round(max(hp.warmup_epochs, 1.0) * per_epoch))
        min_ratio = 1.0 if hp.scheduler == "constant" else hp.min_lr_ratio
        schedule = partial(warmup_cosine, total_steps=total - start, warmup_steps=warmup, min_ratio=min_ratio)
        return partial(after_start, start=start, schedule=schedule)

