"""Finetune: a pretrained backbone with a new head, trained as a linear probe, fully, or gradually."""

from __future__ import annotations

from functools import partial
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from lit_effdl.errors import UserError
from lit_effdl.losses import classification_loss
from lit_effdl.methods.base import BaseMethod, warmup_cosine
from lit_effdl.models.auxiliary import loss_with_aux
from lit_effdl.models.loading import NAMED_WEIGHTS, LoadReport, load_pretrained

AUX_HEADS = ("aux1", "aux2", "AuxLogits")  # GoogLeNet / Inception auxiliary classifiers


def head_modules(model: nn.Module) -> list[nn.Module]:
    """The classifier (timm's ``get_classifier`` or ``fc`` / ``classifier``) and auxiliary classifiers."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if head is None:
        head = getattr(model, "fc", None) or getattr(model, "classifier", None)
    if not isinstance(head, nn.Module):
        raise UserError(f"cannot find the classifier of {type(model).__name__}: Finetune needs a timm-style model")
    aux = [getattr(model, name) for name in AUX_HEADS if isinstance(getattr(model, name, None), nn.Module)]
    return [head, *aux]


def reset_head(model: nn.Module, num_classes: int) -> None:
    """A fresh classifier with ``num_classes`` outputs (timm's ``reset_classifier`` where it exists)."""
    if hasattr(model, "reset_classifier"):
        model.reset_classifier(num_classes)
        heads = head_modules(model)[1:]
    else:
        heads = head_modules(model)
    for head in heads:
        for module in head.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()


def _split_decay(params: list[nn.Parameter], name: str, lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """Like ``base.decay_groups`` but keeps frozen parameters (gradual mode unfreezes them later)."""
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [
        {"name": name, "params": decay, "lr": lr, "weight_decay": weight_decay},
        {"name": f"{name}_no_decay", "params": no_decay, "lr": lr, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


class Finetune(BaseMethod):
    """Transfer a pretrained backbone: a new head on top, then one of three modes.

    Args:
        mode: ``linear_probe`` (backbone frozen, its BatchNorm kept in eval, only the head trains),
            ``full`` (everything trains, ``backbone_lr`` / ``head_lr``) or ``gradual`` (frozen until
            ``unfreeze_epoch``, then the backbone trains at ``backbone_lr`` after its own warm-up).
        checkpoint_path: local weights: a lit-effdl checkpoint, a timm / torchvision state_dict, a
            ``.safetensors`` file, or a named package (``efficientnet_lite0_imagenet``).
        checkpoint_key_map: how the file's keys map onto the backbone: null (same names), ``by_order``
            (foreign names, every shape must match) or a ``{their_prefix: our_prefix}`` map.
        head_lr: learning rate of the new head (default: ``lr``).
        backbone_lr: learning rate of the backbone in ``full`` / ``gradual`` (default: ``lr / 10``).
        unfreeze_epoch: ``gradual``: the epoch at which the backbone starts training.
        layer_decay: timm layer-wise LR decay (layer k of L trains at ``head_lr * layer_decay**(L-k)``).
        freeze_bn: keep the backbone's BatchNorm statistics fixed (eval mode) in ``full`` / ``gradual``
            too; always on while the backbone is frozen.
        cache_features: ``linear_probe`` with a deterministic train pipeline: compute backbone features
            once and train the head on them (an epoch costs a head's forward and backward).
        label_smoothing: weight of the uniform distribution mixed into the targets.
        **kwargs: everything ``BaseMethod`` takes (backbone, pretrained, lr, schedule, EMA...).

    Example::

        lit-effdl fit --config configs/digits/finetune_lite0_probe.yaml --test_after_fit true
    """

    def __init__(
        self,
        mode: Literal["linear_probe", "full", "gradual"] = "full",
        checkpoint_path: str | None = None,
        checkpoint_key_map: dict[str, str] | Literal["by_order"] | None = None,
        head_lr: float | None = None,
        backbone_lr: float | None = None,
        unfreeze_epoch: int = 1,
        layer_decay: float | None = None,
        freeze_bn: bool = False,
        cache_features: bool = False,
        label_smoothing: float = 0.0,
        **kwargs,
    ):
        _validate(mode, checkpoint_path, head_lr, backbone_lr, unfreeze_epoch, layer_decay, cache_features, kwargs)
        self.load_report: LoadReport | None = None
        super().__init__(**kwargs)
        self.label_smoothing = label_smoothing
        self.body_frozen = mode in ("linear_probe", "gradual")
        self._feature_cache: torch.Tensor | None = None
        self._set_body_trainable(not self.body_frozen)

    # ------------------------------------------------------------------ network
    def build_backbone(self) -> nn.Module:
        """Create the named net, load ``checkpoint_path`` (classifier dropped), put a new head on it."""
        hp = self.hparams
        model = super().build_backbone()
        if hp.checkpoint_path:
            self.load_report = load_pretrained(model, hp.checkpoint_path, hp.checkpoint_key_map)
        reset_head(model, hp.num_classes)
        return model

    @property
    def heads(self) -> list[nn.Module]:
        return head_modules(self.backbone)

    def body_parameters(self) -> list[nn.Parameter]:
        """The backbone's parameters without the (new) head's."""
        head_ids = {id(p) for head in self.heads for p in head.parameters()}
        return [p for p in self.backbone.parameters() if id(p) not in head_ids]

    def body_norms(self) -> list[nn.Module]:
        head_ids = {id(m) for head in self.heads for m in head.modules()}
        return [m for m in self.backbone.modules() if isinstance(m, _BatchNorm) and id(m) not in head_ids]

    def _set_body_trainable(self, trainable: bool) -> None:
        for param in self.body_parameters():
            param.requires_grad_(trainable)

    def train(self, mode: bool = True) -> "Finetune":
        """Lightning's mode switches never put a frozen backbone's BatchNorm back in training mode."""
        super().train(mode)
        if mode and (self.body_frozen or self.hparams.freeze_bn):
            for norm in self.body_norms():
                norm.eval()
        return self

    # ------------------------------------------------------------------ fit hooks
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        classes = getattr(datamodule, "num_classes", None)
        if classes is not None and classes != self.hparams.num_classes:
            raise UserError(
                f"model num_classes={self.hparams.num_classes} disagrees with the data module's {classes} classes: "
                f"leave num_classes to the data module (the CLI links it) or set it to {classes}"
            )
        if stage == "fit" and self.hparams.mode == "gradual" and self.trainer.world_size > 1:
            raise UserError("mode='gradual' runs on one device (DDP ignores parameters frozen at wrap time): use full")
        if stage == "fit" and self.hparams.cache_features:
            from lit_effdl.augment.pipelines import is_random_spec

            spec = getattr(datamodule, "labeled_augment", None)
            if datamodule is None or is_random_spec(spec):
                raise UserError(
                    f"cache_features=true needs a deterministic train pipeline, got data.labeled_augment={spec!r}: "
                    f"set data.labeled_augment: none"
                )
        super().setup(stage)  # after the cache check: augment_on="device" takes the data module's specs

    def on_train_start(self) -> None:
        if self.hparams.cache_features and self._feature_cache is None:
            self._feature_cache = self.compute_features(self.trainer.datamodule.labeled_dataset())

    def on_train_epoch_start(self) -> None:
        hp = self.hparams
        if hp.mode == "gradual" and self.body_frozen and self.current_epoch >= hp.unfreeze_epoch:
            self.body_frozen = False
            self._set_body_trainable(True)
        self.train()  # re-apply the BatchNorm policy whatever mode Lightning restored

    @torch.no_grad()
    def compute_features(self, dataset: torch.utils.data.Dataset) -> torch.Tensor:
        """Pooled pre-logit features of every item of ``dataset``, indexed by its ``index``."""
        net = self.backbone
        if not (hasattr(net, "forward_features") and hasattr(net, "forward_head")):
            raise UserError(f"cache_features needs a timm-style backbone; {type(net).__name__} is not")
        was_training = net.training
        net.eval()
        loader = torch.utils.data.DataLoader(dataset, batch_size=256, shuffle=False)
        feats = None
        for batch in loader:
            out = net.forward_head(net.forward_features(self.prepare(batch["image"].to(self.device))), pre_logits=True)
            if feats is None:
                feats = out.new_zeros(len(dataset), out.shape[1])
            feats[batch["index"].to(self.device)] = out
        net.train(was_training)
        self.train(was_training)
        return feats

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        labeled = self.labeled_part(batch)
        if self._feature_cache is not None:
            feats = F.dropout(self._feature_cache[labeled["index"]], self.hparams.drop_rate, training=True)
            output = self.heads[0](feats)
        else:
            output = self(self.augment_batch(labeled["image"], "labeled"))
        loss_fn = partial(classification_loss, label_smoothing=self.label_smoothing)
        loss, _ = loss_with_aux(output, labeled["target"], loss_fn, self.hparams.aux_weight)
        self.log_train("loss", loss, batch_size=labeled["target"].shape[0], prog_bar=True)
        return loss

    # ------------------------------------------------------------------ optimization
    def param_groups(self) -> list[dict[str, Any]]:
        """``head`` (+``_no_decay``) and, unless probing, ``backbone`` groups (or timm layer groups)."""
        hp = self.hparams
        head_lr = hp.head_lr or hp.lr
        head_params = [p for head in self.heads for p in head.parameters()]
        if hp.mode == "linear_probe":
            return _split_decay(head_params, "head", head_lr, hp.weight_decay)
        if hp.layer_decay is not None:
            return self._layer_decay_groups(head_lr)
        backbone_lr = hp.backbone_lr if hp.backbone_lr is not None else hp.lr / 10
        return _split_decay(self.body_parameters(), "backbone", backbone_lr, hp.weight_decay) + _split_decay(
            head_params, "head", head_lr, hp.weight_decay
        )

    def _layer_decay_groups(self, head_lr: float) -> list[dict[str, Any]]:
        from timm.optim import param_groups_layer_decay

        if not hasattr(self.backbone, "group_matcher"):
            raise UserError(f"layer_decay needs a timm backbone with layer groups; {self.hparams.backbone} has none")
        groups = param_groups_layer_decay(self.backbone, self.hparams.weight_decay, layer_decay=self.hparams.layer_decay)
        named = []
        for i, group in enumerate(groups):
            scale = group.pop("lr_scale", 1.0)
            group.pop("param_names", None)
            suffix = "" if group["weight_decay"] else "_no_decay"
            named.append({**group, "lr": head_lr * scale, "name": f"layer{i // 2:02d}_x{scale:.3g}{suffix}"})
        return named

    def configure_optimizers(self):
        config = super().configure_optimizers()
        hp = self.hparams
        if hp.mode != "gradual":
            return config
        if not isinstance(config, dict):  # constant LR: still a schedule, for the backbone's groups
            schedule = torch.optim.lr_scheduler.LambdaLR(config, lambda step: 1.0)
            config = {"optimizer": config, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
        # the backbone's groups get their own schedule: 0 while frozen, then warm-up + cosine
        schedule = config["lr_scheduler"]["scheduler"]
        total = self.total_optimizer_steps()
        per_epoch = self.optimizer_steps_per_epoch(total)
        start = hp.unfreeze_epoch * per_epoch
        warmup = int(round(max(hp.warmup_epochs, 1.0) * per_epoch))
        min_ratio = 1.0 if hp.scheduler == "constant" else hp.min_lr_ratio

        def after_unfreeze(step: int) -> float:
            return 0.0 if step < start else warmup_cosine(step - start, total - start, warmup, min_ratio)

        for i, group in enumerate(schedule.optimizer.param_groups):
            if group.get("name", "").startswith("backbone"):
                schedule.lr_lambdas[i] = after_unfreeze
                group["lr"] = group["initial_lr"] * after_unfreeze(schedule.last_epoch)
        return config


def _validate(mode, checkpoint_path, head_lr, backbone_lr, unfreeze_epoch, layer_decay, cache_features, kwargs) -> None:
    if mode not in ("linear_probe", "full", "gradual"):
        raise UserError(f"mode='{mode}' is not valid: use 'linear_probe', 'full' or 'gradual'")
    if mode == "linear_probe" and backbone_lr is not None:
        raise UserError(f"backbone_lr={backbone_lr} is given in linear_probe mode, where the backbone is frozen: "
                        f"remove it, or use mode 'full' / 'gradual'")
    for name, value in (("head_lr", head_lr), ("backbone_lr", backbone_lr)):
        if value is not None and value < 0:
            raise UserError(f"{name}={value} is not valid: use a learning rate >= 0")
    if mode == "gradual" and unfreeze_epoch < 1:
        raise UserError(f"unfreeze_epoch={unfreeze_epoch} is not valid in gradual mode: use 1 or more")
    if layer_decay is not None and not (0.0 < layer_decay <= 1.0 and mode != "linear_probe" and backbone_lr is None):
        raise UserError(f"layer_decay={layer_decay} is not valid: use a value in (0, 1] with mode full / gradual "
                        f"and no backbone_lr (layers scale head_lr)")
    if cache_features and mode != "linear_probe":
        raise UserError(f"cache_features=true needs mode='linear_probe' (a frozen backbone), got mode='{mode}'")
    if checkpoint_path and str(checkpoint_path) in NAMED_WEIGHTS:
        arch = NAMED_WEIGHTS[str(checkpoint_path)].architecture
        if kwargs.get("backbone", "small_cnn") != arch:
            raise UserError(f"weights '{checkpoint_path}' fit backbone '{arch}', not '{kwargs.get('backbone', 'small_cnn')}'")
