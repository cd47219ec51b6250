"""`BaseMethod`: the plumbing every paradigm shares, once.

It owns the backbone, input normalisation, metrics, the optimizer with named parameter groups,
the warm-up + cosine schedule and an optional EMA of weights used for evaluation. A method file
subclasses it, adds its own knobs and writes ``training_step``; nothing else.
"""

from __future__ import annotations

import copy
import functools
import math
from typing import Any, Callable, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from lit_effdl.errors import NonFiniteLossError, UserError
from lit_effdl.models import create_backbone


class WeightEMA(nn.Module):
    """Exponential moving average of a network's weights for evaluation.

    Hand-written because neither Lightning's ``EMAWeightAveraging`` nor timm's ``ModelEmaV3`` has
    this warm-up, ``decay_t = min(decay, (1 + t) / (10 + t))``, which keeps a short run's average
    useful from the first steps. BatchNorm statistics (buffers) are copied from the live model.
    """

    def __init__(self, model: nn.Module, decay: float):
        super().__init__()
        self.decay = decay
        self.module = copy.deepcopy(model).requires_grad_(False)  # Lightning sets its mode

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        decay = min(self.decay, (1.0 + step) / (10.0 + step))
        ema_params = [p for p in self.module.parameters()]
        live_params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_params, live_params, 1.0 - decay)
        for ema_buffer, live_buffer in zip(self.module.buffers(), model.buffers()):
            ema_buffer.copy_(live_buffer)


def decay_groups(module: nn.Module, name: str, lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """Two named groups of ``module``'s trainable parameters: weights with decay, and norms /
    biases (1-d tensors) without; empty groups are dropped."""
    decay, no_decay = [], []
    for param in module.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    groups = [
        {"name": name, "params": decay, "lr": lr, "weight_decay": weight_decay},
        {"name": f"{name}_no_decay", "params": no_decay, "lr": lr, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def guard_nonfinite(step: Callable) -> Callable:
    """Wrap a ``training_step``: a non-finite loss stops the run with a message naming the step and
    the logged loss terms, or, with ``skip_nonfinite``, returns None so Lightning skips backward and
    the optimizer step. On the CPU the check is immediate (a host read costs nothing there); on an
    accelerator the default mode records the first bad step on the device and reads it when a step
    is logged anyway and at the epoch's end (no host sync per step); ``skip_nonfinite`` must decide
    before backward, so it reads one scalar per step."""

    @functools.wraps(step)
    def guarded(self: "BaseMethod", batch: Any, batch_idx: int, *args: Any, **kwargs: Any) -> Any:
        self._loss_terms = {}
        output = step(self, batch, batch_idx, *args, **kwargs)
        loss = output["loss"] if isinstance(output, dict) else output
        if loss is None:
            return output
        if not self.checks_loss_each_step(loss):
            self._record_nonfinite(loss)
            return output
        if bool(torch.isfinite(loss)):
            return output
        if self.hparams.get("skip_nonfinite"):
            self.skipped_steps += 1
            self.log("train/skipped_steps", float(self.skipped_steps), on_step=True, on_epoch=False)
            return None
        terms = ", ".join(f"train/{k}={float(v):.4g}" for k, v in self._loss_terms.items()) or "none logged"
        raise NonFiniteLossError(
            f"non-finite loss {float(loss)} at global step {self.global_step} (epoch {self.current_epoch}, "
            f"batch {batch_idx}); loss terms: {terms}. {NONFINITE_HINT}"
        )

    guarded.guards_nonfinite = True
    return guarded


NONFINITE_HINT = "Lower the lr or check the inputs; model.init_args.skip_nonfinite: true skips such steps instead"


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
        augment_on: where training augmentation runs: ``loader`` (per image in DataLoader workers) or
            ``device`` (the data module's specs, batched on the training device via ``augment_batch``).
        skip_nonfinite: a non-finite loss skips its step (counted in ``train/skipped_steps``) instead of
            stopping the run with a message naming the step and the loss terms.
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
        aux_weight: float = 0.3,
        augment_on: Literal["loader", "device"] = "loader",
        skip_nonfinite: bool = False,
    ):
        super().__init__()
        if lr <= 0:
            raise UserError(f"lr={lr} is not valid: use a positive learning rate")
        if not 0.0 <= ema_decay < 1.0:
            raise UserError(f"ema_decay={ema_decay} is not valid: use 0 (off) or a value in (0, 1)")
        if optimizer not in ("sgd", "adamw"):
            raise UserError(f"optimizer='{optimizer}' is not valid: use 'sgd' or 'adamw'")
        if augment_on not in ("loader", "device"):
            raise UserError(f"augment_on='{augment_on}' is not valid: use 'loader' or 'device'")
        self.skipped_steps = 0
        self._loss_terms: dict[str, torch.Tensor] = {}
        self._first_nonfinite_step: torch.Tensor | None = None  # accelerators: see guard_nonfinite
        self._term_sums: dict[str, tuple[torch.Tensor, int]] = {}  # see log_train
        self._device_augment: dict = {}  # view -> BatchedPipeline, filled by setup() when on device
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

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every method's ``training_step`` gets the non-finite loss guard, written once here."""
        super().__init_subclass__(**kwargs)
        step = cls.__dict__.get("training_step")
        if step is not None and not getattr(step, "guards_nonfinite", False):
            cls.training_step = guard_nonfinite(step)

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

    def log_train(self, name: str, value: torch.Tensor, batch_size: int, prog_bar: bool = False) -> None:
        """``train/<name>``: per-step values (``_step``) and the batch-weighted epoch mean (``_epoch``).

        Progress-bar terms go through ``self.log`` every step. The others are summed on the device
        and handed to ``self.log`` only on the steps the logger writes and at the epoch's end: each
        ``self.log`` call costs 0.5-1 ms of CPU in Lightning 2.6, as much as a small net's step part.
        """
        self._loss_terms[name] = value.detach()
        if prog_bar or self._trainer is None:
            self.log(f"train/{name}", value, on_step=True, on_epoch=True, batch_size=batch_size, prog_bar=prog_bar)
            return
        total, count = self._term_sums.get(name, (0.0, 0))
        self._term_sums[name] = (value.detach().float() * batch_size + total, count + batch_size)
        if getattr(getattr(self.trainer, "_logger_connector", None), "should_update_logs", True):
            self.log(f"train/{name}_step", value, on_step=True, on_epoch=False, batch_size=batch_size)

    def _log_epoch_terms(self) -> None:
        """Epoch means of the terms ``log_train`` summed (averaged over ranks), then a fresh start."""
        for name, (total, count) in self._term_sums.items():
            self.log(f"train/{name}_epoch", total / max(count, 1), on_step=False, on_epoch=True, sync_dist=True)
        self._term_sums = {}

    # ------------------------------------------------------------------ augmentation on the device
    def setup(self, stage: str) -> None:
        """With ``augment_on="device"``, take the data module's specs (its loaders then stop
        augmenting). Subclasses overriding ``setup`` call ``super().setup(stage)``."""
        if self.hparams.get("augment_on") == "device" and stage == "fit" and not self._device_augment:
            from lit_effdl.augment.batched import take_device_pipelines

            self._device_augment = take_device_pipelines(getattr(self.trainer, "datamodule", None))

    def augment_batch(self, images: torch.Tensor, view: str = "labeled") -> torch.Tensor:
        """The batched augmentation of ``view`` (``labeled``, ``weak`` or ``strong``) when
        ``augment_on="device"``; the images unchanged otherwise (the loader augmented them)."""
        pipeline = self._device_augment.get(view)
        return images if pipeline is None else pipeline(images)

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

    # ------------------------------------------------------------------ non-finite losses, EMA
    def checks_loss_each_step(self, loss: torch.Tensor) -> bool:
        """Read the loss on the host every step: on the CPU (free) or when skipping bad steps."""
        return loss.device.type == "cpu" or bool(self.hparams.get("skip_nonfinite"))

    def _record_nonfinite(self, loss: torch.Tensor) -> None:
        """Keep the first global step with a non-finite loss on the device (no host sync)."""
        if self._first_nonfinite_step is None or self._first_nonfinite_step.device != loss.device:
            self._first_nonfinite_step = torch.full((), -1, dtype=torch.long, device=loss.device)
        first = self._first_nonfinite_step
        bad = ~torch.isfinite(loss.detach()) & (first < 0)
        self._first_nonfinite_step = torch.where(bad, torch.full_like(first, self.global_step), first)

    def _raise_recorded_nonfinite(self) -> None:
        if self._first_nonfinite_step is not None and int(self._first_nonfinite_step) >= 0:
            raise NonFiniteLossError(
                f"non-finite loss at global step {int(self._first_nonfinite_step)} (seen at step "
                f"{self.global_step}, epoch {self.current_epoch}: on accelerators the check runs when a "
                f"step is logged). {NONFINITE_HINT}"
            )

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update(self.backbone, self.global_step)
        if self._first_nonfinite_step is not None and self.trainer is not None \
                and self.global_step % max(1, self.trainer.log_every_n_steps) == 0:
            self._raise_recorded_nonfinite()  # the logging step reads metrics from the device anyway

    def on_train_epoch_end(self) -> None:
        self._raise_recorded_nonfinite()
        self._log_epoch_terms()

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
