"""Knowledge distillation (Hinton, Vinyals & Dean 2015): a frozen teacher teaches the student."""

from __future__ import annotations

from typing import Any, Literal

import torch

from lit_effdl.augment.mix import Mix
from lit_effdl.callbacks.teacher_accuracy import TeacherAccuracy
from lit_effdl.callbacks.teacher_logits import TeacherLogitCache
from lit_effdl.errors import UserError
from lit_effdl.losses import distillation_loss, kd_kl_loss
from lit_effdl.methods.base import BaseMethod
from lit_effdl.models.teacher import FrozenTeacher, build_teacher

TEACHER_PREFIX = "teacher."


class Distill(BaseMethod):
    r"""Distil a frozen teacher into the (smaller) student ``backbone``, on labeled and unlabeled images.

    .. math::

       L = \alpha \cdot CE(y, s) + (1 - \alpha) \cdot [KD(s_l, t_l) + w_u \cdot KD(s_u, t_u)],
       \quad KD(s, t) = \tau^2 \cdot KL(\mathrm{softmax}(t / \tau) \,\|\, \mathrm{softmax}(s / \tau))

    Geoffrey Hinton, Oriol Vinyals, Jeff Dean: "Distilling the Knowledge in a Neural Network",
    NIPS 2014 Deep Learning Workshop (https://arxiv.org/abs/1503.02531). Teacher and student see
    the same (augmented, Mixup / CutMix-ed) images: Beyer et al. 2022's function matching.

    Args:
        teacher_backbone: backbone name of the teacher (``create_backbone``: local, timm, googlenet).
        teacher_checkpoint: the teacher's weights: a lit-effdl checkpoint (EMA copy preferred), a plain
            state_dict or a .safetensors file; read when fit starts (a student loads without it).
        teacher_pretrained: use timm's pretrained weights instead (their head must have num_classes).
        teacher_backbone_kwargs: extra keyword arguments for the teacher's constructor.
        temperature: :math:`\tau`, the softmax temperature on both sides (> 0).
        alpha: :math:`\alpha`, weight of the hard-label CE; with 0 the labels are never read.
        unlabeled_weight: :math:`w_u`, weight of KD on unlabeled batches (data.unlabeled_ratio > 0).
        unlabeled_view: which augmented view of unlabeled images both networks see.
        mixup_alpha: Mixup on labeled batches (Beta(a, a)), 0 off; the CE target is mixed too.
        cutmix_alpha: CutMix on labeled batches (the label weight is the pasted box's true area), 0 off.
        mix_prob, mix_switch_prob: probability that a labeled batch is mixed, and of CutMix (both on).
        save_teacher: store the teacher's weights in every student checkpoint.
        cache_teacher_logits: run the teacher once over the train images and reuse its fp16 logits
            (``TeacherLogitCache``: only valid without random augmentation of the inputs).
        teacher_cache_file: where the cache is read / written (default: the run folder).
        **kwargs: everything ``BaseMethod`` takes (the student's backbone, optimizer, schedule...).
    """

    def __init__(self, teacher_backbone: str = "small_cnn_w64", teacher_checkpoint: str | None = None,
                 teacher_pretrained: bool = False, teacher_backbone_kwargs: dict[str, Any] | None = None,
                 temperature: float = 4.0, alpha: float = 0.5, unlabeled_weight: float = 1.0,
                 unlabeled_view: Literal["weak", "strong"] = "weak", mixup_alpha: float = 0.0,
                 cutmix_alpha: float = 0.0, mix_prob: float = 1.0, mix_switch_prob: float = 0.5,
                 save_teacher: bool = False, cache_teacher_logits: bool = False,
                 teacher_cache_file: str | None = None, **kwargs):
        if not temperature > 0:
            raise UserError(f"temperature={temperature} is not valid: use a positive value (e.g. 4)")
        if not 0.0 <= alpha <= 1.0:
            raise UserError(f"alpha={alpha} is not valid: use a value in [0, 1] (weight of the hard-label CE)")
        if unlabeled_weight < 0:
            raise UserError(f"unlabeled_weight={unlabeled_weight} is not valid: use 0 or more")
        if unlabeled_view not in ("weak", "strong"):
            raise UserError(f"unlabeled_view='{unlabeled_view}' is not valid: use 'weak' or 'strong'")
        mix = Mix(mixup_alpha, cutmix_alpha, mix_prob, mix_switch_prob)
        cache = TeacherLogitCache(teacher_backbone, teacher_checkpoint, unlabeled_view, unlabeled_weight > 0,
                                  teacher_cache_file, mix) if cache_teacher_logits else None
        if not (teacher_checkpoint or teacher_pretrained):
            raise UserError("the teacher has no weights: give teacher_checkpoint (a trained model) or "
                            "teacher_pretrained: true (a timm model); a random teacher teaches nothing")
        super().__init__(**kwargs)
        self.mix, self.logit_cache = mix, cache
        self.teacher: FrozenTeacher | None = None  # built in setup(): never needed to load a student

    def new_teacher(self, load: bool = True) -> FrozenTeacher:
        """The configured teacher, frozen; with ``load`` its weights are read and checked."""
        hp = self.hparams
        return build_teacher(hp.teacher_backbone, hp.num_classes, hp.in_chans, hp.teacher_checkpoint,
                             hp.teacher_pretrained, hp.teacher_backbone_kwargs, load=load)

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.teacher is None:
            self.teacher = self.new_teacher()
        super().setup(stage)

    def configure_callbacks(self) -> list:
        cache = [self.logit_cache] if self.logit_cache is not None else []
        return [*super().configure_callbacks(), TeacherAccuracy(self.hparams.num_classes), *cache]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        losses = self.compute_losses(batch)
        n_l = self.labeled_part(batch)["image"].shape[0]
        for name, value in losses.items():
            size = batch["unlabeled"]["index"].shape[0] if name == "loss_kd_unlabeled" else n_l
            self.log_train(name, value, batch_size=size, prog_bar=name == "loss")
        return losses["loss"]

    def compute_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        """``loss`` (the total), ``loss_ce``, ``loss_kd`` and ``loss_kd_unlabeled`` of one batch.

        Labeled and unlabeled images go through each network in one forward, the teacher's first
        (the student's saved activations are not held while it runs). ``hidden_target`` is never read.
        """
        hp = self.hparams
        labeled = self.labeled_part(batch)
        unlabeled = batch.get("unlabeled") if "labeled" in batch else None
        use_unlabeled = unlabeled is not None and hp.unlabeled_weight > 0
        n_l = labeled["image"].shape[0]
        x = self.prepare(labeled["image"])
        targets = labeled.get("target") if hp.alpha > 0 else None
        if self.mix.active:  # Mixup / CutMix: the CE targets become probability vectors (None stays None)
            labels = targets if targets is not None else torch.zeros(n_l, dtype=torch.long, device=x.device)
            x, soft = self.mix(x, labels, hp.num_classes)
            targets = soft if targets is not None else None
        if use_unlabeled:
            x = torch.cat([x, self.prepare(unlabeled[hp.unlabeled_view])])
        teacher = self.teacher_logits(x, labeled["index"], unlabeled["index"] if use_unlabeled else None)
        student = self.backbone(x)
        loss, ce, kd = distillation_loss(student[:n_l], teacher[:n_l], targets, hp.temperature, hp.alpha)
        out = {"loss": loss, "loss_ce": ce, "loss_kd": kd}
        if use_unlabeled:
            kd_u = kd_kl_loss(student[n_l:], teacher[n_l:], hp.temperature)
            out.update(loss=loss + (1 - hp.alpha) * hp.unlabeled_weight * kd_u,
                       loss_kd=kd + hp.unlabeled_weight * kd_u, loss_kd_unlabeled=kd_u)
        return out

    def teacher_logits(self, x: torch.Tensor, labeled_index: torch.Tensor, unlabeled_index: torch.Tensor | None):
        """The teacher's logits of the prepared images ``x``: cached by index when the cache is filled."""
        if self.logit_cache is not None and self.logit_cache.logits is not None:
            parts = {"labeled": labeled_index, "unlabeled": unlabeled_index}
            return torch.cat([self.logit_cache.lookup(p, i, x.device) for p, i in parts.items() if i is not None])
        if self.teacher is None:
            raise RuntimeError("the teacher is built when fit starts; it is not part of a loaded student")
        return self.teacher(x)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Drop the teacher's weights unless ``save_teacher``: the student stands alone."""
        if not self.hparams.save_teacher:
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith(TEACHER_PREFIX)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A saved teacher is rebuilt (no file needed); a missing one is filled from the live
        teacher, so strict loading works mid-fit (testing the best checkpoint)."""
        state = checkpoint["state_dict"]
        if any(k.startswith(TEACHER_PREFIX) for k in state):
            if self.teacher is None:
                self.teacher = self.new_teacher(load=False)
        elif self.teacher is not None:
            state.update(self.teacher.state_dict(prefix=TEACHER_PREFIX))
