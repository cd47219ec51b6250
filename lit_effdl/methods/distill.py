"""Knowledge distillation (Hinton, Vinyals & Dean 2015): a frozen teacher teaches the student."""

from __future__ import annotations

from typing import Any, Literal

import torch

from lit_effdl.augment.mix import Mix
from lit_effdl.callbacks.teacher_accuracy import TeacherAccuracy
from lit_effdl.callbacks.teacher_logits import TeacherLogitCache
from lit_effdl.errors import UserError
from lit_effdl.losses import check_temperature, distillation_loss, kd_kl_loss
from lit_effdl.methods.base import BaseMethod
from lit_effdl.models.teacher import FrozenTeacher, build_teacher


class Distill(BaseMethod):
    r"""Distil a frozen teacher into the (smaller) student ``backbone``, on labeled and unlabeled images.

    .. math::

       L = \alpha CE(y, s) + (1 - \alpha) [KD(s_l, t_l) + w_u KD(s_u, t_u)],\ KD(s, t) = \tau^2 KL(p_t^\tau \| p_s^\tau)

    with :math:`p^\tau = \mathrm{softmax}(\mathrm{logits} / \tau)`; s: student, t: teacher, l / u: (un)labeled.
    Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network" (https://arxiv.org/abs/1503.02531).
    Teacher and student see the same (augmented, Mixup / CutMix-ed) images: Beyer et al. 2022's function matching.

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
        mix_prob: probability that a labeled batch is mixed.
        mix_switch_prob: probability of CutMix rather than Mixup when both are on.
        save_teacher: store the teacher's weights in every student checkpoint.
        cache_teacher_logits: run the teacher once over the train images and reuse its fp16 logits
            (``TeacherLogitCache``: only valid without random augmentation of the inputs).
        teacher_cache_file: where the cache is read / written (default: the run folder).
        **kwargs: everything ``BaseMethod`` takes (the student's backbone, optimizer, schedule...).
    """

    TEACHER_PREFIX = "teacher."  # the teacher's keys in the module's state_dict

    def __init__(self, teacher_backbone: str = "small_cnn_w64", teacher_checkpoint: str | None = None,
                 teacher_pretrained: bool = False, teacher_backbone_kwargs: dict[str, Any] | None = None,
                 temperature: float = 4.0, alpha: float = 0.5, unlabeled_weight: float = 1.0,
                 unlabeled_view: Literal["weak", "strong"] = "weak", mixup_alpha: float = 0.0,
                 cutmix_alpha: float = 0.0, mix_prob: float = 1.0, mix_switch_prob: float = 0.5, save_teacher: bool = False,
                 cache_teacher_logits: bool = False, teacher_cache_file: str | None = None, **kwargs):
        check_temperature(temperature, example=4)
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
        cache = TeacherLogitCache(teacher_backbone, teacher_checkpoint, unlabeled_view, unlabeled_weight > 0,
                                  teacher_cache_file) if cache_teacher_logits else None
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

    def configure_callbacks(self) -> list:
        return [*super().configure_callbacks(), TeacherAccuracy(self.hparams.num_classes), *filter(None, [self.logit_cache])]

    def augmented_views(self) -> tuple[str, ...]:
        return ("labeled", self.hparams.unlabeled_view) if self.hparams.unlabeled_weight > 0 else ("labeled",)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        losses = self.compute_losses(batch)
        n_l = self.labeled_part(batch)["image"].shape[0]
        for name, value in losses.items():
            size = batch["unlabeled"]["index"].shape[0] if name == "loss_kd_unlabeled" else n_l
            self.log_train(name, value, batch_size=size, prog_bar=name == "loss")
        return losses["loss"]

    def compute_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        """``loss`` (total), ``loss_ce``, ``loss_kd``, ``loss_kd_unlabeled``. Labeled + unlabeled images: one forward
        per network, the teacher's first (the student's activations are not held meanwhile); no ``hidden_target``."""
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

    def teacher_logits(self, x: torch.Tensor, labeled: torch.Tensor, unlabeled: torch.Tensor | None) -> torch.Tensor:
        """The teacher's logits of the prepared images ``x`` (from the cache by sample index when it is filled)."""
        if self.logit_cache is not None and self.logit_cache.logits is not None:
            return self.logit_cache.lookup({"labeled": labeled, "unlabeled": unlabeled}, x.device)
        if self.teacher is None:
            raise RuntimeError("the teacher is built when fit starts; it is not part of a loaded student")
        return self.teacher(x)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Drop the teacher's weights unless ``save_teacher``: the student stands alone."""
        if not self.hparams.save_teacher:
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith(self.TEACHER_PREFIX)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Rebuild a saved teacher (no file needed); fill a missing one from the live one (strict loading mid-fit)."""
        state = checkpoint["state_dict"]
        if any(k.startswith(self.TEACHER_PREFIX) for k in state):
            if self.teacher is None:
                self.teacher = self.new_teacher(load=False)
        elif self.teacher is not None:
            state.update(self.teacher.state_dict(prefix=self.TEACHER_PREFIX))
