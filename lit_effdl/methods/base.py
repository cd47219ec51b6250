"""`BaseMethod`: the plumbing every paradigm shares, once.

It owns the backbone, input normalisation, metrics, the optimizer with named parameter groups, the
warm-up + cosine schedule, an optional EMA of weights used for evaluation and the non-finite loss
guard (a callback). A method file subclasses it, adds its knobs and writes ``training_step``: it
receives augmented views (the data module augments) and logs its terms with ``log_train``.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Callable, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from timm.optim import param_groups_layer_decay, param_groups_weight_decay
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from lit_effdl.callbacks.nonfinite import NonFiniteGuard
from lit_effdl.errors import UserError
from lit_effdl.losses import classification_loss
from lit_effdl.models import create_backbone, load_body
from lit_effdl.models.auxiliary import DEFAULT_AUX_WEIGHT, loss_with_aux
from lit_effdl.models.ema import WeightEMA
from lit_effdl.models.inputs import normalise_images


def decay_groups(module: nn.Module, name: str, lr: float, weight_decay: float,
                 skip: nn.Module | None = None) -> list[dict[str, Any]]:
    """Named groups of ``module``'s trainable parameters but ``skip``'s (timm's ``param_groups_weight_decay``):
    ``name`` with weight decay, ``name_no_decay`` for norms and biases (1-d tensors)."""
    skipped = {id(p) for p in skip.parameters()} if skip is not None else set()
    groups = [{**g, "params": [p for p in g["params"] if id(p) not in skipped]}
              for g in param_groups_weight_decay(module, weight_decay)]
    named = [{**g, "name": name + ("" if g["weight_decay"] else "_no_decay"), "lr": lr} for g in groups if g["params"]]
    return sorted(named, key=lambda g: g["weight_decay"] == 0)  # decayed group first


def layer_decay_groups(module: nn.Module, lr: float, weight_decay: float, layer_decay: float) -> list[dict[str, Any]]:
    """timm's ``param_groups_layer_decay``: layer k of L at ``lr * layer_decay**(L - k)``, named
    ``layerNN_x<scale>`` (+``_no_decay`` for norms and biases)."""
    if not hasattr(module, "group_matcher"):
        raise UserError(f"layer_decay needs a timm backbone with layer groups; {type(module).__name__} has none")
    named = []
    for i, group in enumerate(param_groups_layer_decay(module, weight_decay, layer_decay=layer_decay)):
        scale = group.pop("lr_scale", 1.0)
        group.pop("param_names", None)
        suffix = "" if group["weight_decay"] else "_no_decay"
        named.append({**group, "lr": lr * scale, "name": f"layer{i // 2:02d}_x{scale:.3g}{suffix}"})
    return named


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, min_ratio: float = 0.0) -> float:
    """LR multiplier: linear warm-up to 1, then cosine down to ``min_ratio`` at ``total_steps``."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class BaseMethod(L.LightningModule):
    """Backbone, metrics, optimizer, schedule and EMA shared by every method.

    Args:
        backbone: a name for ``create_backbone`` (``small_cnn``, ``wrn_28_2``, any timm model).
        num_classes: classifier outputs (linked from the data module by the CLI).
        in_chans: input channels (linked from the data module by the CLI).
        class_names: class names (linked from the data module; kept in checkpoints for predict).
        pretrained: load timm's pretrained weights (needs network or a warm cache).
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth rate for residual backbones.
        backbone_kwargs: extra keyword arguments for the backbone constructor.
        init_from: a lit-effdl checkpoint whose backbone body (no classifier, no projection head) starts this run.
        optimizer: ``sgd`` (with momentum / nesterov) or ``adamw``.
        lr: base learning rate (per-device batch as configured; scale it yourself with world size).
        weight_decay: L2 weight decay (never on norms and biases).
        momentum: SGD momentum.
        nesterov: SGD with Nesterov momentum.
        scheduler: ``cosine`` (per step, after warm-up) or ``constant``.
        warmup_epochs: linear warm-up length in epochs (fractions allowed).
        min_lr_ratio: the cosine ends at ``lr * min_lr_ratio``.
        ema_decay: EMA of weights for evaluation (e.g. 0.999); 0 turns it off.
        input_mean: per-channel mean of inputs scaled to [0, 1] (one value is broadcast).
        input_std: per-channel std of inputs scaled to [0, 1].
        channels_last: use the channels-last memory format (faster convolutions on GPUs).
        compile: ``torch.compile`` the backbone (in place: checkpoint keys unchanged; first steps slower).
        aux_weight: weight of each auxiliary classifier's loss in training (GoogLeNet / Inception).
        skip_nonfinite: a non-finite loss skips its step (counted in ``train/skipped_steps``) instead of
            stopping the run with a message naming the step and the loss terms (``NonFiniteGuard``).
    """

    def __init__(
        self,
        backbone: str = "small_cnn",
        num_classes: int = 10,
        in_chans: int = 3,
        class_names: list[str] | None = None,
        pretrained: bool = False,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        backbone_kwargs: dict[str, Any] | None = None,
        init_from: str | None = None,
        optimizer: Literal["sgd", "adamw"] = "sgd",
        lr: float = 0.03,
        weight_decay: float = 5e-4,
        momentum: float = 0.9,
        nesterov: bool = True,
        scheduler: Literal["cosine", "constant"] = "cosine",
        warmup_epochs: float = 0.0,
        min_lr_ratio: float = 0.0,
        ema_decay: float = 0.0,
        input_mean: tuple[float, ...] = (0.5,),
        input_std: tuple[float, ...] = (0.5,),
        channels_last: bool = False,
        compile: bool = False,
        aux_weight: float = DEFAULT_AUX_WEIGHT,
        skip_nonfinite: bool = False,
    ):
        super().__init__()
        if lr <= 0:
            raise UserError(f"lr={lr} is not valid: use a positive learning rate")
        if not 0.0 <= ema_decay < 1.0:
            raise UserError(f"ema_decay={ema_decay} is not valid: use 0 (off) or a value in (0, 1)")
        if optimizer not in ("sgd", "adamw"):
            raise UserError(f"optimizer='{optimizer}' is not valid: use 'sgd' or 'adamw'")
        self.last_loss_terms: dict[str, torch.Tensor] = {}  # this step's, for NonFiniteGuard's message
        self._term_sums: dict[str, tuple[torch.Tensor, int]] = {}  # see log_train
        self.save_hyperparameters()
        self.backbone = load_body(self.build_backbone(), init_from)  # before the EMA copy; a resumed fit restores over it
        if channels_last:
            self.backbone = self.backbone.to(memory_format=torch.channels_last)
        self.register_buffer("input_mean", torch.tensor(input_mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.tensor(input_std).view(1, -1, 1, 1), persistent=False)
        self.ema = WeightEMA(self.backbone, ema_decay) if ema_decay > 0 else None
        if compile:  # after the EMA copy, which stays eager (it only evaluates)
            self.backbone.compile()
        self.val_metrics = self._metrics("val")
        self.test_metrics = self._metrics("test")

    # ------------------------------------------------------------------ building blocks
    def build_backbone(self) -> nn.Module:
        """The trained network; methods that change the head or wrap the net override this."""
        hp = self.hparams
        return create_backbone(hp.backbone, hp.num_classes, pretrained=hp.pretrained, in_chans=hp.in_chans,
                               drop_rate=hp.drop_rate, drop_path_rate=hp.drop_path_rate, **(hp.backbone_kwargs or {}))

    def _metrics(self, stage: str) -> nn.ModuleDict:
        n = self.hparams.num_classes
        top5 = {"acc_top5": MulticlassAccuracy(n, top_k=5, average="micro")} if n >= 5 else {}
        return nn.ModuleDict({"acc": MulticlassAccuracy(n, average="micro"), **top5})

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (0..255) or float (0..1) images -> normalised float, in the configured layout."""
        x = normalise_images(images, self.input_mean, self.input_std)
        return x.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of the trained network."""
        return self.backbone(self.prepare(images))

    @property
    def eval_backbone(self) -> nn.Module:
        """The network evaluated and exported: the EMA copy when EMA is on."""
        return self.ema.module if self.ema is not None else self.backbone

    def eval_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.eval_backbone(self.prepare(images))

    AUGMENTED_VIEWS: tuple[str, ...] = ("labeled", "weak", "strong")  # what augmented_views() gives by default
    def augmented_views(self) -> tuple[str, ...]:
        """Training views the step reads, in the order ``augment_on: device`` draws their augmentation."""
        return self.AUGMENTED_VIEWS

    @staticmethod
    def labeled_part(batch: dict) -> dict:
        """The labeled sub-batch of a plain or a semi-supervised (``{"labeled", "unlabeled"}``) batch."""
        return batch["labeled"] if "labeled" in batch else batch

    def classification_loss(self, output: Any, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        """Cross-entropy of a network output against class indices or probability vectors, auxiliary
        classifiers (GoogLeNet / Inception in training) added with ``aux_weight``."""
        loss_fn = partial(classification_loss, label_smoothing=label_smoothing)
        return loss_with_aux(output, targets, loss_fn, self.hparams.aux_weight)[0]

    def log_train(self, name: str, value: torch.Tensor, batch_size: int, prog_bar: bool = False) -> None:
        """``train/<name>``: per-step values (``_step``) and the batch-weighted epoch mean (``_epoch``).
        Progress-bar terms go through ``self.log`` every step; the others are summed on the device and
        logged on logging steps (every ``trainer.log_every_n_steps``, as the loggers write) and at the
        epoch's end: each ``self.log`` call costs 0.5-1 ms of CPU in Lightning 2.6."""
        self.last_loss_terms[name] = value.detach()
        if prog_bar:
            self.log(f"train/{name}", value, on_step=True, on_epoch=True, batch_size=batch_size, prog_bar=True)
            return
        total, count = self._term_sums.get(name, (0.0, 0))
        self._term_sums[name] = (value.detach().float() * batch_size + total, count + batch_size)
        if self.is_logging_step():
            self.log(f"train/{name}_step", value, on_step=True, on_epoch=False, batch_size=batch_size)

    def is_logging_step(self) -> bool:
        """Whether Lightning's loggers write this training step (public values only)."""
        try:
            trainer = self.trainer
        except RuntimeError:  # not attached to a Trainer (a step called by hand)
            return True
        return (trainer.global_step + 1) % max(1, trainer.log_every_n_steps) == 0 or trainer.should_stop

    # ------------------------------------------------------------------ evaluation
    def _eval_step(self, batch: dict, stage: str, metrics: nn.ModuleDict) -> dict[str, torch.Tensor]:
        logits = self.eval_logits(batch["image"])
        loss = F.cross_entropy(logits.float(), batch["target"])
        size = batch["target"].shape[0]
        self.log(f"{stage}/loss", loss, on_epoch=True, sync_dist=True, batch_size=size)
        for name, metric in metrics.items():
            metric(logits, batch["target"])
            self.log(f"{stage}/{name}", metric, on_epoch=True, batch_size=size, prog_bar=name == "acc")
        return {"loss": loss, "logits": logits.detach()}

    def validation_step(self, batch: dict, batch_idx: int) -> dict[str, torch.Tensor]:
        return self._eval_step(batch, "val", self.val_metrics)

    def test_step(self, batch: dict, batch_idx: int) -> dict[str, torch.Tensor]:
        return self._eval_step(batch, "test", self.test_metrics)

    def predict_step(self, batch: dict, batch_idx: int) -> dict[str, torch.Tensor]:
        return {"probs": self.eval_logits(batch["image"]).float().softmax(-1), "index": batch["index"]}

    # ------------------------------------------------------------------ training hooks
    def configure_callbacks(self) -> list[Callback]:
        """The non-finite loss guard for every fit (unless the Trainer was given one)."""
        given = any(isinstance(c, NonFiniteGuard) for c in self.trainer.callbacks)
        return [] if given else [NonFiniteGuard(skip=bool(self.hparams.get("skip_nonfinite")))]

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self.last_loss_terms = {}

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update(self.backbone, step=self.global_step)

    def on_train_epoch_end(self) -> None:
        """Epoch means of the terms ``log_train`` summed (averaged over ranks), then a fresh start."""
        for name, (total, count) in self._term_sums.items():
            self.log(f"train/{name}_epoch", total / max(count, 1), on_step=False, on_epoch=True, sync_dist=True)
        self._term_sums = {}

    # ------------------------------------------------------------------ optimization
    def param_groups(self) -> list[dict[str, Any]]:
        """Named parameter groups with their LRs; methods override (head vs backbone)."""
        return decay_groups(self.backbone, "backbone", self.hparams.lr, self.hparams.weight_decay)

    def total_optimizer_steps(self) -> int:
        """Optimizer steps of the whole fit; a run with no set length (``max_time`` only) is refused."""
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise UserError(f"the LR schedule (scheduler='{self.hparams.scheduler}') needs a run of known length: "
                            "set trainer.max_epochs or trainer.max_steps (max_time alone has none)")
        return int(total)

    def optimizer_steps_per_epoch(self, total: int) -> int:
        """Optimizer steps in one epoch of this fit (``total``: the run's steps), right with
        ``trainer.max_steps`` and ``max_epochs=-1`` too, where total // max_epochs is not."""
        if not math.isfinite(self.trainer.num_training_batches):
            self.trainer.fit_loop.setup_data()  # as estimated_stepping_batches does, which skips it for max_epochs=-1
        batches = self.trainer.num_training_batches  # per epoch
        if math.isfinite(batches):
            return max(1, math.ceil(batches / self.trainer.accumulate_grad_batches))
        return max(1, total // max(1, self.trainer.max_epochs or 1))

    def has_lr_schedule(self) -> bool:
        """Whether the LR changes during the fit (otherwise no scheduler is built)."""
        return self.hparams.scheduler != "constant" or bool(self.hparams.warmup_epochs)

    def lr_factor(self, group: dict[str, Any], total: int, per_epoch: int) -> Callable[[int], float]:
        """LR multiplier of ``group`` at each optimizer step (``total`` in the fit, ``per_epoch`` in an
        epoch): warm-up + cosine for every group here; methods may give groups their own."""
        hp = self.hparams
        min_ratio = 1.0 if hp.scheduler == "constant" else hp.min_lr_ratio
        warmup = int(round(hp.warmup_epochs * per_epoch))
        return partial(warmup_cosine, total_steps=total, warmup_steps=warmup, min_ratio=min_ratio)

    def create_optimizer(self, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
        """SGD (momentum, Nesterov) or AdamW on ``groups``; a method with its own optimizer overrides this."""
        hp = self.hparams
        if hp.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=hp.lr, momentum=hp.momentum, nesterov=hp.nesterov)
        return torch.optim.AdamW(groups, lr=hp.lr)

    def configure_optimizers(self):
        optimizer = self.create_optimizer(self.param_groups())
        if not self.has_lr_schedule():
            return optimizer
        total = self.total_optimizer_steps()
        per_epoch = self.optimizer_steps_per_epoch(total)
        factors = [self.lr_factor(group, total, per_epoch) for group in optimizer.param_groups]
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factors)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
