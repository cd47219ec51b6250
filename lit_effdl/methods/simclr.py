"""SimCLR (Chen et al. 2020): two augmented views of each unlabeled image agree through a projection head.

The paper's Algorithm 1, per step::

    for the N images of a minibatch: two views x1 = t(x), x2 = t'(x)       (the data module draws them)
        h = f(x)    the backbone's pooled features (kept for every downstream task)
        z = g(h)    the projection head, Linear-BN-ReLU-Linear (dropped downstream)
    loss = NT-Xent(z): each view's positive is its other view, the other 2N - 2 views its negatives
           (under DDP the views of every rank, gathered with their gradients)
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.callbacks import Callback
from timm.optim import Lars
from torch import nn

from lit_effdl.callbacks.knn import KNNMonitor
from lit_effdl.errors import UserError
from lit_effdl.losses import check_temperature, gather_with_grad, nt_xent_loss
from lit_effdl.methods.base import BaseMethod, decay_groups


def projection_head(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """SimCLR's projection head g: Linear-BN-ReLU-Linear."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
                         nn.Linear(hidden_dim, out_dim))


class SimCLR(BaseMethod):
    """Self-supervised pretraining of the backbone on the data module's **unlabeled pool** (labels unused).

    The two views are the unlabeled batch's ``weak`` and ``strong`` images: give both the SimCLR
    preset (``data.unlabeled_weak_augment: simclr`` and ``unlabeled_strong_augment: simclr``, or
    ``simclr_noflip``), so they are two independent draws of one augmentation. Images per step:
    ``batch_size x unlabeled_ratio`` (the labeled batch the loader also hands is not read). The
    network has no classifier: the backbone's pooled features feed the projection head, named
    ``projector`` (outside ``backbone``: ``init_from`` a SimCLR checkpoint loads the backbone only).
    Validation is ``KNNMonitor``'s (added unless ``trainer.callbacks`` has one): ``val/knn_acc``,
    ``val/knn_acc_labeled`` (also logged as ``val/acc``, what the CLI's checkpoint monitors),
    ``val/linear_acc`` at the end. Logged in training: ``train/loss`` (NT-Xent).

    Args:
        proj_hidden_dim: hidden width of the projection head.
        proj_output_dim: output dimension of the projection head (where NT-Xent compares views).
        temperature: NT-Xent temperature, > 0.
        lars: optimize with LARS (timm's ``Lars``: SGD with a layer-wise trust ratio; biases and
            norms, which have no weight decay, are not adapted), the paper's large-batch optimizer.
        lars_trust_coefficient: LARS's trust coefficient.
        **kwargs: everything ``BaseMethod`` takes (backbone, lr, weight_decay, warmup_epochs, ...).

    Example::

        lit-effdl fit --config configs/digits/simclr.yaml
    """

    AUGMENTED_VIEWS = ("weak", "strong")
    has_classifier = False  # KNNMonitor logs val/acc for it

    def __init__(self, proj_hidden_dim: int = 512, proj_output_dim: int = 128, temperature: float = 0.2,
                 lars: bool = False, lars_trust_coefficient: float = 0.001, **kwargs: Any):
        check_temperature(temperature)
        if proj_hidden_dim < 1 or proj_output_dim < 1:
            raise UserError(f"proj_hidden_dim={proj_hidden_dim}, proj_output_dim={proj_output_dim}: "
                            "use positive widths")
        if lars and kwargs.get("optimizer", "sgd") != "sgd":
            raise UserError(f"lars=true is SGD with a trust ratio: leave optimizer 'sgd', not '{kwargs['optimizer']}'")
        super().__init__(**kwargs)
        self.projector = projection_head(self.backbone.num_features, proj_hidden_dim, proj_output_dim)

    def build_backbone(self) -> nn.Module:
        """The named network without its classifier: its output is the pooled features h."""
        backbone = super().build_backbone()
        if not hasattr(backbone, "reset_classifier") or not hasattr(backbone, "num_features"):
            raise UserError(f"SimCLR needs a timm-style backbone (reset_classifier, num_features); "
                            f"'{self.hparams.backbone}' is not one")
        backbone.reset_classifier(0)
        return backbone

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if "unlabeled" not in batch:
            raise UserError("SimCLR reads two views of unlabeled images: set data.unlabeled_ratio above 0")
        view1, view2 = batch["unlabeled"]["weak"], batch["unlabeled"]["strong"]
        h = self(torch.cat([view1, view2]))  # one forward for both views
        z = self.projector(h)
        candidates, offset = gather_with_grad(z)  # every rank's views: the negatives
        loss = nt_xent_loss(z, self.hparams.temperature, candidates, offset)
        self.log_train("loss", loss, view1.shape[0], prog_bar=True)
        return loss

    # ------------------------------------------------------------------ plumbing
    def setup(self, stage: str) -> None:
        """Refuse a fit with nothing to pretrain on before any step."""
        dm = getattr(self.trainer, "datamodule", None)
        if stage != "fit" or dm is None or not hasattr(dm, "unlabeled_inference_dataset"):
            return
        if dm.unlabeled_ratio < 1:
            raise UserError(f"SimCLR reads two views of unlabeled images: data.unlabeled_ratio={dm.unlabeled_ratio} "
                            "gives none; set it above 0 (images per step: batch_size x unlabeled_ratio)")
        if len(dm.unlabeled_inference_dataset()) == 0:
            raise UserError("SimCLR has no images to pretrain on: the data module's unlabeled pool is empty (every "
                            "train image is labeled, or there are none); set data.num_labels_per_class or "
                            "num_labels below the class sizes, or give an unlabeled folder")

    def configure_callbacks(self) -> list[Callback]:
        """The non-finite guard, and the k-NN monitor unless ``trainer.callbacks`` has one."""
        given = any(isinstance(c, KNNMonitor) for c in self.trainer.callbacks)
        return super().configure_callbacks() + ([] if given else [KNNMonitor()])

    def param_groups(self) -> list[dict[str, Any]]:
        hp = self.hparams
        return super().param_groups() + decay_groups(self.projector, "projector", hp.lr, hp.weight_decay)

    def create_optimizer(self, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
        """BaseMethod's SGD; with ``lars``, the same groups (and schedule) on ``Lars``."""
        hp = self.hparams
        if not hp.lars:
            return super().create_optimizer(groups)
        return Lars(groups, lr=hp.lr, momentum=hp.momentum, nesterov=hp.nesterov, trust_coeff=hp.lars_trust_coefficient)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """No classifier to score: ``KNNMonitor`` measures the features on these batches."""

    def test_step(self, batch: dict, batch_idx: int) -> None:
        raise UserError("SimCLR has no classifier to test: fine-tune from its checkpoint "
                        "(model.init_args.init_from) and test that, or read val/knn_acc")

    def predict_step(self, batch: dict, batch_idx: int) -> None:
        raise UserError("SimCLR has no classifier to predict with: fine-tune from its checkpoint "
                        "(model.init_args.init_from) first")
