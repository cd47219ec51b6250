"""`BaseMethod`: the plumbing every paradigm shares, once.

It owns the backbone, input normalisation, metrics, the optimizer with named parameter groups,
the warm-up + cosine schedule and an optional EMA of weights used for evaluation. A method file
subclasses it, adds its own knobs and writes ``training_step``; nothing else.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Callable, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from timm.optim import param_groups_weight_decay
from timm.utils import ModelEmaV3
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from lit_effdl.callbacks.nonfinite import NonFiniteGuard
from lit_effdl.errors import UserError
from lit_effdl.losses import classification_loss
from lit_effdl.models import create_backbone
from lit_effdl.models.auxiliary import DEFAULT_AUX_WEIGHT, loss_with_aux


class WeightEMA(ModelEmaV3):
    """Exponential moving average of a network's weights for evaluation: timm's ``ModelEmaV3``
    (parameters lerped in one foreach call, buffers copied from the live model) with the warm-up
    ``decay_t = min(decay, (1 + t) / (10 + t))``, which keeps a short run's average useful early.

    Not Lightning's ``WeightAveraging``: measured on WRN-28-2 (1.47 M parameters, CPU, 1 thread) its
    ``AveragedModel`` update costs 11.3 ms per step against 3.4 ms here, it averages BatchNorm
    statistics (a running mean 0.82 where the live model has 1.0; ``use_buffers=False`` leaves them
    at their initial values), it copies the whole LightningModule (a distillation teacher too), and
    checkpoints lose the ``ema.module.*`` keys that weight loading and teachers read.
    """

    def __init__(self, model: nn.Module, decay: float):
        super().__init__(model, decay=decay, exclude_buffers=True, stochastic_rounding=False)
        self.module.requires_grad_(False)  # Lightning sets its train / eval mode

    def get_decay(self, step: int | None = None) -> float:
        return self.decay if step is None else min(self.decay, (1.0 + step) / (10.0 + step))


def decay_groups(module: nn.Module, name: str, lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """Named groups of ``module``'s trainable parameters (timm's ``param_groups_weight_decay``):
    ``name`` with weight decay, ``name_no_decay`` for norms and biases (1-d tensors)."""
    groups = param_groups_weight_decay(module, weight_decay)
    named = [{**g, "name": name + ("" if g["weight_decay"] else "_no_decay"), "lr": lr} for g in groups]
    return sorted(named, key=lambda g: g["weight_decay"] == 0)  # decayed group first


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
        self.backbone = self.build_backbone()
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
        return create_backbone(
            hp.backbone, hp.num_classes, pretrained=hp.pretrained, in_chans=hp.in_chans,
            drop_rate=hp.drop_rate, drop_path_rate=hp.drop_path_rate, **(hp.backbone_kwargs or {}),
        )

    def _metrics(self, stage: str) -> nn.ModuleDict:
        n = self.hparams.num_classes
        metrics = {"acc": MulticlassAccuracy(n, average="micro")}
        if n >= 5:
            metrics["acc_top5"] = MulticlassAccuracy(n, top_k=5, average="micro")
        return nn.ModuleDict(metrics)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (0..255) or float (0..1) images -> normalised float, in the configured layout."""
        x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
        x = (x - self.input_mean) / self.input_std
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

        Progress-bar terms go through ``self.log`` every step. The others are summed on the device
        and handed to ``self.log`` only on logging steps (every ``trainer.log_every_n_steps``
        optimizer steps, as Lightning's loggers write) and at the epoch's end: each ``self.log``
        call costs 0.5-1 ms of CPU in Lightning 2.6, as much as a small net's step part.
        """
        self.last_loss_terms[name] = value.detach()
        if prog_bar or not self.is_logging_step():
            if prog_bar:
                self.log(f"train/{name}", value, on_step=True, on_epoch=True, batch_size=batch_size, prog_bar=True)
        else:
            self.log(f"train/{name}_step", value, on_step=True, on_epoch=False, batch_size=batch_size)
        if not prog_bar:
            total, count = self._term_sums.get(name, (0.0, 0))
            self._term_sums[name] = (value.detach().float() * batch_size + total, count + batch_size)

    def is_logging_step(self) -> bool:
        """Whether Lightning's loggers write this training step (public values only)."""
        try:
            trainer = self.trainer
        except RuntimeError:  # not attached to a Trainer (a step called by hand)
            return True
        return (trainer.global_step + 1) % max(1, trainer.log_every_n_steps) == 0 or trainer.should_stop

    # ------------------------------------------------------------------ training hooks
    def configure_callbacks(self) -> list[Callback]:
        """The non-finite loss guard for every fit (unless the Trainer was given one)."""
        try:
            given = any(isinstance(c, NonFiniteGuard) for c in self.trainer.callbacks)
        except RuntimeError:
            given = False
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
            raise UserError(f"the LR schedule (scheduler='{self.hparams.scheduler}', warmup_epochs="
                            f"{self.hparams.warmup_epochs}) needs a run of known length: set trainer.max_epochs "
                            "or trainer.max_steps (max_time alone has none)")
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

    def configure_optimizers(self):
        hp = self.hparams
        groups = self.param_groups()
        if hp.optimizer == "sgd":
            optimizer = torch.optim.SGD(groups, lr=hp.lr, momentum=hp.momentum, nesterov=hp.nesterov)
        else:
            optimizer = torch.optim.AdamW(groups, lr=hp.lr)
        if hp.scheduler == "constant" and not hp.warmup_epochs:
            return optimizer
        total = self.total_optimizer_steps()
        warmup = int(round(hp.warmup_epochs * self.optimizer_steps_per_epoch(total)))
        min_ratio = 1.0 if hp.scheduler == "constant" else hp.min_lr_ratio
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, total, warmup, min_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
