"""Knowledge distillation: a frozen teacher teaches the student, on labeled and unlabeled images.

total = alpha * CE(label, student) + (1 - alpha) * [KD(labeled) + unlabeled_weight * KD(unlabeled)],
KD = KL(softmax(teacher / T) || softmax(student / T)) * T^2 (``lit_effdl.losses.kd_kl_loss``).
Teacher and student always see the same (augmented, Mixup / CutMix-ed) images.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from lit_effdl.augment.mix import Mix
from lit_effdl.errors import UserError
from lit_effdl.losses import distillation_loss, kd_kl_loss
from lit_effdl.methods.base import BaseMethod
from lit_effdl.models import create_backbone
from lit_effdl.models.loading import classifier_keys, load_weights, read_state_dict

TEACHER_PREFIX = "teacher."
CACHE_FILE = "teacher_logits.pt"


class FrozenTeacher(nn.Module):
    """A network that stays in eval mode whatever ``.train()`` calls reach it, with no gradients.

    Lightning puts the LightningModule in train mode every epoch; ``nn.Module.train`` recurses into
    children, so overriding ``train`` here keeps dropout off and BatchNorm statistics frozen.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> "FrozenTeacher":
        return super().train(False)

    @torch.no_grad()  # not inference_mode: its outputs feed the student's autograd graph as targets
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(m.training for m in self.modules()):  # someone set ``.training`` directly
            self.train(False)
        return self.net(x)


class Distill(BaseMethod):
    """Distil a frozen teacher into the (smaller) student ``backbone``.

    Args:
        teacher_backbone: backbone name of the teacher (``create_backbone``: local, timm, googlenet).
        teacher_checkpoint: weights of the teacher: a lit-effdl checkpoint of any method (EMA copy
            preferred), a plain state_dict or a .safetensors file. Read when fit starts, so a
            student checkpoint loads later without this file.
        teacher_pretrained: use timm's pretrained weights instead (their head must have num_classes).
        teacher_backbone_kwargs: extra keyword arguments for the teacher's constructor.
        temperature: softmax temperature T on both sides (> 0).
        alpha: weight of the hard-label cross-entropy; 1 - alpha weights distillation. With 0 the
            labels are never read (distillation from the teacher alone).
        unlabeled_weight: weight of the distillation term on unlabeled batches (data.unlabeled_ratio > 0).
        unlabeled_view: which augmented view of unlabeled images both networks see.
        mixup_alpha: Mixup on labeled batches (Beta(a, a)); 0 turns it off. Teacher and student see
            the same mixed images (Beyer et al. 2022's function matching); the CE target is mixed too.
        cutmix_alpha: CutMix on labeled batches (Beta(a, a); the label weight is the pasted box's
            true area); 0 turns it off.
        mix_prob: probability that a labeled batch is mixed.
        mix_switch_prob: probability of CutMix rather than Mixup when both are on.
        save_teacher: store the teacher's weights in every student checkpoint.
        cache_teacher_logits: run the teacher once over the train images, keep fp16 logits by
            sample index and reuse them (only valid without random augmentation of the inputs).
        teacher_cache_file: where the cache is read / written (default: the run folder).
        **kwargs: everything ``BaseMethod`` takes (the student's backbone, optimizer, schedule...).

    Example::

        lit-effdl fit --config configs/digits/distill.yaml --model.init_args.teacher_checkpoint t.ckpt
    """

    def __init__(
        self,
        teacher_backbone: str = "small_cnn_w64",
        teacher_checkpoint: str | None = None,
        teacher_pretrained: bool = False,
        teacher_backbone_kwargs: dict[str, Any] | None = None,
        temperature: float = 4.0,
        alpha: float = 0.5,
        unlabeled_weight: float = 1.0,
        unlabeled_view: Literal["weak", "strong"] = "weak",
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        mix_prob: float = 1.0,
        mix_switch_prob: float = 0.5,
        save_teacher: bool = False,
        cache_teacher_logits: bool = False,
        teacher_cache_file: str | None = None,
        **kwargs,
    ):
        if not temperature > 0:
            raise UserError(f"temperature={temperature} is not valid: use a positive value (e.g. 4)")
        if not 0.0 <= alpha <= 1.0:
            raise UserError(f"alpha={alpha} is not valid: use a value in [0, 1] (weight of the hard-label CE)")
        if unlabeled_weight < 0:
            raise UserError(f"unlabeled_weight={unlabeled_weight} is not valid: use 0 or more")
        if unlabeled_view not in ("weak", "strong"):
            raise UserError(f"unlabeled_view='{unlabeled_view}' is not valid: use 'weak' or 'strong'")
        mix = Mix(mixup_alpha, cutmix_alpha, mix_prob, mix_switch_prob)
        if mix.active and cache_teacher_logits:
            raise UserError(f"cache_teacher_logits with mixup_alpha={mixup_alpha} / cutmix_alpha={cutmix_alpha} "
                            "is not valid: Mixup and CutMix are random, cached teacher logits would not match "
                            "the mixed images; set both to 0")
        if not (teacher_checkpoint or teacher_pretrained):
            raise UserError("the teacher has no weights: give teacher_checkpoint (a trained model) or "
                            "teacher_pretrained: true (a timm model); a random teacher teaches nothing")
        super().__init__(**kwargs)
        self.mix = mix
        self.teacher: FrozenTeacher | None = None  # built in setup(): never needed to load a student
        self.teacher_val_acc = MulticlassAccuracy(self.hparams.num_classes, average="micro")
        self._teacher_acc_logged = False
        self._cache: dict[str, torch.Tensor] | None = None

    # ------------------------------------------------------------------ teacher
    def build_teacher(self, load: bool = True) -> FrozenTeacher:
        """The teacher network, frozen; with ``load`` its weights are read and checked."""
        hp = self.hparams
        pretrained = bool(hp.teacher_pretrained and load and not hp.teacher_checkpoint)
        if pretrained:
            check_pretrained_classes(hp.teacher_backbone, hp.num_classes)
        net = create_backbone(hp.teacher_backbone, hp.num_classes, pretrained=pretrained,
                              in_chans=hp.in_chans, **(hp.teacher_backbone_kwargs or {}))
        if load and hp.teacher_checkpoint:
            if not Path(hp.teacher_checkpoint).expanduser().is_file():
                raise UserError(f"teacher_checkpoint {hp.teacher_checkpoint} is not a file: give the teacher's "
                                f".ckpt, .pt/.pth or .safetensors (e.g. from scripts/distill_demo.py)")
            state = read_state_dict(hp.teacher_checkpoint)
            check_teacher_classes(net, state, hp.num_classes, hp.teacher_checkpoint)
            load_weights(net, state, drop_classifier=False,
                         origin=f"teacher_checkpoint {hp.teacher_checkpoint} (teacher_backbone '{hp.teacher_backbone}')")
        return FrozenTeacher(net)

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.teacher is None:
            self.teacher = self.build_teacher()
        if stage == "fit" and self.hparams.cache_teacher_logits:
            self._check_cache_valid()  # before augment_on="device" takes the data module's specs
        super().setup(stage)

    def teacher_logits(self, x: torch.Tensor, part: str | None = None, index: torch.Tensor | None = None) -> torch.Tensor:
        """The teacher's logits of the prepared images ``x`` (from the cache when it is on)."""
        if self._cache is not None and part is not None and index is not None:
            return self._cache[part][index.to(self._cache[part].device)].to(x.device).float()
        if self.teacher is None:
            raise RuntimeError("the teacher is built when fit starts; it is not part of a loaded student")
        return self.teacher(x)

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        losses = self.compute_losses(batch)
        n_l = self.labeled_part(batch)["image"].shape[0]
        for name, value in losses.items():
            if name == "loss_kd_unlabeled":
                self.log_train(name, value, batch_size=batch["unlabeled"]["index"].shape[0])
            elif name != "loss":
                self.log_train(name, value, batch_size=n_l)
        self.log_train("loss", losses["loss"], batch_size=n_l, prog_bar=True)
        return losses["loss"]

    def compute_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        """``loss`` (the total), ``loss_ce``, ``loss_kd`` and ``loss_kd_unlabeled`` of one batch.

        Labeled and unlabeled images go through each network in one forward. ``hidden_target`` of
        unlabeled images is never read.
        """
        hp = self.hparams
        labeled = self.labeled_part(batch)
        unlabeled = batch.get("unlabeled") if "labeled" in batch else None
        use_unlabeled = unlabeled is not None and hp.unlabeled_weight > 0
        n_l = labeled["image"].shape[0]
        x = self.prepare(self.augment_batch(labeled["image"], "labeled"))
        targets = labeled.get("target") if hp.alpha > 0 else None
        if self.mix.active:
            x, targets = self._mix(x, targets)
        if use_unlabeled:
            view = hp.unlabeled_view
            x = torch.cat([x, self.prepare(self.augment_batch(unlabeled[view], view))])
        student = self.backbone(x)
        if self._cache is not None:
            teacher = torch.cat([self.teacher_logits(x, "labeled", labeled["index"])]
                                + ([self.teacher_logits(x, "unlabeled", unlabeled["index"])] if use_unlabeled else []))
        else:
            teacher = self.teacher_logits(x)
        loss, ce, kd = distillation_loss(student[:n_l], teacher[:n_l], targets, hp.temperature, hp.alpha)
        out = {"loss": loss, "loss_ce": ce, "loss_kd": kd}
        if use_unlabeled:
            kd_u = kd_kl_loss(student[n_l:], teacher[n_l:], hp.temperature)
            out.update(loss=loss + (1 - hp.alpha) * hp.unlabeled_weight * kd_u,
                       loss_kd=kd + hp.unlabeled_weight * kd_u, loss_kd_unlabeled=kd_u)
        return out

    def _mix(self, x: torch.Tensor, targets: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Mixup / CutMix on the prepared batch; targets become probability vectors (None stays None)."""
        labels = targets if targets is not None else torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        mixed, soft = self.mix(x, labels, self.hparams.num_classes)
        return mixed, (soft if targets is not None else None)

    # ------------------------------------------------------------------ teacher accuracy, once
    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if self.teacher is not None and not self._teacher_acc_logged and not self.trainer.sanity_checking:
            logits = self.teacher(self.prepare(batch["image"]))
            self.teacher_val_acc(logits, batch["target"])
            self.log("val/teacher_acc", self.teacher_val_acc, on_epoch=True, batch_size=batch["target"].shape[0])
        return super().validation_step(batch, batch_idx)

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking and self.teacher is not None:
            self._teacher_acc_logged = True

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Drop the teacher's weights unless ``save_teacher``: the student stands alone."""
        if not self.hparams.save_teacher:
            state = checkpoint["state_dict"]
            for key in [k for k in state if k.startswith(TEACHER_PREFIX)]:
                del state[key]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Match the module to the checkpoint: a saved teacher is rebuilt (no file needed), a
        missing one is filled from the live teacher so strict loading works mid-fit (test 'best')."""
        state = checkpoint["state_dict"]
        has_teacher = any(k.startswith(TEACHER_PREFIX) for k in state)
        if has_teacher and self.teacher is None:
            self.teacher = self.build_teacher(load=False)
        elif not has_teacher and self.teacher is not None:
            for key, value in self.teacher.state_dict(prefix=TEACHER_PREFIX).items():
                state[key] = value

    # ------------------------------------------------------------------ teacher-logit cache
    def _datamodule(self):
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None or not hasattr(dm, "labeled_source"):
            raise UserError("cache_teacher_logits needs a lit-effdl data module (LabelBudgetDataModule)")
        return dm

    def _cached_specs(self, dm) -> dict[str, str | None]:
        specs = {"data.labeled_augment": dm.labeled_augment}
        if dm.unlabeled_ratio > 0 and self.hparams.unlabeled_weight > 0:
            view = self.hparams.unlabeled_view
            specs[f"data.unlabeled_{view}_augment"] = getattr(dm, f"unlabeled_{view}_augment")
        return specs

    def _check_cache_valid(self) -> None:
        from lit_effdl.augment import is_random_spec

        dm = self._datamodule()
        random = {name: spec for name, spec in self._cached_specs(dm).items() if is_random_spec(spec)}
        if random:
            shown = ", ".join(f"{k}='{v}'" for k, v in random.items())
            raise UserError(f"cache_teacher_logits is not valid with a random pipeline ({shown}): cached "
                            f"teacher logits would not match the augmented images; set {' and '.join(random)} "
                            f"to 'none', or turn the cache off (online distillation)")

    def on_fit_start(self) -> None:
        if self.hparams.cache_teacher_logits:
            self._cache = self._load_or_build_cache()

    def _cache_key(self, dm) -> dict[str, Any]:
        hp = self.hparams
        ckpt = hp.teacher_checkpoint
        stat = os.stat(ckpt) if ckpt and os.path.isfile(ckpt) else None
        return {
            "teacher": f"{hp.teacher_backbone}|{ckpt}|{stat.st_size if stat else ''}|{stat.st_mtime_ns if stat else ''}",
            "split": dm.split.fingerprint(), "labeled": len(dm.labeled_source),
            "unlabeled": len(dm.unlabeled_source), "specs": str(self._cached_specs(dm)),
        }

    def _cache_path(self) -> Path:
        if self.hparams.teacher_cache_file:
            return Path(self.hparams.teacher_cache_file).expanduser()
        return Path(self.trainer.log_dir or ".") / CACHE_FILE

    def _load_or_build_cache(self) -> dict[str, torch.Tensor]:
        """Teacher logits of every train image, fp16, indexed like the batches' ``index``.

        Inference by ``lit_effdl.pseudo_labels.predict_probs`` (sharded over ranks, gathered by
        sample index) rather than ``trainer.predict``, which would reset the running fit loop.
        """
        from lit_effdl.data.views import ImagesOnlyView
        from lit_effdl.pseudo_labels import predict_probs

        dm = self._datamodule()
        key, path = self._cache_key(dm), self._cache_path()
        if path.is_file():
            stored = torch.load(path, map_location="cpu", weights_only=True)
            if stored.get("key") == key:
                return {k: stored[k].to(self.device) for k in ("labeled", "unlabeled")}
        cache = {"key": key}
        specs = self._cached_specs(dm)
        for part, source in (("labeled", dm.labeled_source), ("unlabeled", dm.unlabeled_source)):
            spec = specs.get("data.labeled_augment" if part == "labeled"
                             else f"data.unlabeled_{self.hparams.unlabeled_view}_augment")
            out = torch.zeros(len(source), self.hparams.num_classes, dtype=torch.float16)
            used = part == "labeled" or len(specs) > 1  # the unlabeled view is only read when trained on
            if len(source) and used:
                result = predict_probs(lambda images: self.teacher(self.prepare(images)),
                                       ImagesOnlyView(source, dm.pipeline(spec)), batch_size=dm.eval_batch_size,
                                       device=self.device, output="logits")
                out[result["index"]] = result["logits"].half()
            cache[part] = out
        if self.trainer.is_global_zero:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
            torch.save(cache, tmp)
            os.replace(tmp, path)
        return {k: cache[k].to(self.device) for k in ("labeled", "unlabeled")}


def check_teacher_classes(net: nn.Module, state: dict[str, torch.Tensor], num_classes: int, origin: str) -> None:
    """A clear message when the teacher checkpoint's classifier has another class count."""
    for key in classifier_keys(net):
        if key in state and state[key].ndim >= 1 and state[key].shape[0] != num_classes:
            raise UserError(f"teacher_checkpoint {origin} has {state[key].shape[0]} classes ('{key}' "
                            f"{tuple(state[key].shape)}) but the student has num_classes={num_classes}: "
                            f"teacher and student must predict the same classes")


def check_pretrained_classes(name: str, num_classes: int) -> None:
    """timm's pretrained head must already have ``num_classes`` outputs to teach anything."""
    try:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(name)
    except Exception:
        cfg = None
    classes = getattr(cfg, "num_classes", None) if cfg is not None else None
    if classes is not None and classes != num_classes:
        raise UserError(f"teacher_pretrained '{name}' predicts {classes} classes but the student has "
                        f"num_classes={num_classes}: fine-tune the teacher on your classes first and pass "
                        f"its teacher_checkpoint")
