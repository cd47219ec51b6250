"""`KNNMonitor`: how good a backbone's features are, measured online on the validation split.

Logged (TensorBoard scalars; ``val/`` because the queries are the validation images):

- ``val/knn_acc_labeled``: k-NN accuracy with the **labeled budget** as the memory (what a
  label-efficient run may use), at every validation;
- ``val/knn_acc``: k-NN accuracy with **all train images and their true labels** as the memory
  (labeled + the unlabeled pool's hidden labels: the standard self-supervised protocol, a
  diagnostic), every ``every_n_epochs`` epochs and at the last validation of the fit;
- ``val/linear_acc``: a linear probe (logistic regression, scikit-learn) on the frozen features of
  the labeled budget, at the last validation of the fit;
- ``val/acc`` = ``val/knn_acc_labeled`` for a module without a classifier (``has_classifier = False``,
  e.g. ``SimCLR``): the metric the CLI's checkpoint monitors (never the hidden labels' number).

The k-NN is InstDisc's / solo-learn's: cosine similarity, the k most similar memory rows vote with
weight ``exp(similarity / temperature)`` (written here: torchmetrics has no k-NN and scikit-learn's
is neither weighted so nor on the device). Features are the backbone's pooled pre-logit features
(``forward_head(..., pre_logits=True)``) of the evaluated network (EMA when on), without augmentation.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn

from lit_effdl.errors import UserError
from lit_effdl.losses import check_temperature
from lit_effdl.models.auxiliary import pooled_features
from lit_effdl.pseudo_labels import predict_probs, unique_by_index


def knn_predict(memory: torch.Tensor, memory_labels: torch.Tensor, queries: torch.Tensor, num_classes: int,
                k: int = 20, temperature: float = 0.07, chunk: int = 1024) -> torch.Tensor:
    """Class of each query row: its ``k`` nearest memory rows (cosine) vote ``exp(cos / temperature)``."""
    memory = F.normalize(memory.float(), dim=1)
    k = min(k, len(memory))
    predictions = []
    for part in F.normalize(queries.float(), dim=1).split(chunk):
        similarity, nearest = (part @ memory.T).topk(k, dim=1)
        votes = torch.zeros(len(part), num_classes, device=part.device)
        predictions.append(votes.scatter_add_(1, memory_labels[nearest], (similarity / temperature).exp()).argmax(1))
    return torch.cat(predictions) if predictions else queries.new_zeros(0, dtype=torch.long)


def linear_probe_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                          test_y: torch.Tensor) -> float | None:
    """Accuracy on ``test`` of a logistic regression fitted on standardised ``train`` features
    (None with fewer than two classes to fit)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(torch.unique(train_y)) < 2:
        return None
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    probe.fit(train_x.cpu().double().numpy(), train_y.cpu().numpy())
    return float(probe.score(test_x.cpu().double().numpy(), test_y.cpu().numpy()))


class KNNMonitor(Callback):
    """k-NN accuracy of the features at each validation, and a linear probe at the fit's last one.

    Args:
        k: neighbours that vote (20: the standard protocol).
        temperature: vote weight ``exp(cosine / temperature)`` (0.07, as InstDisc and solo-learn).
        every_n_epochs: ``val/knn_acc`` (all train images as memory: a pass over the train set) every
            N epochs and at the last validation; ``val/knn_acc_labeled`` is at every validation.
        linear_probe: log ``val/linear_acc`` at the last validation of the fit.
        log_val_acc: also log ``val/knn_acc_labeled`` as ``val/acc``; None: when the module has no
            classifier (``has_classifier = False``).

    Needs a lit-effdl method (``prepare``, ``eval_backbone``) and data module (``inference_dataset``).
    """

    def __init__(self, k: int = 20, temperature: float = 0.07, every_n_epochs: int = 1, linear_probe: bool = True,
                 log_val_acc: bool | None = None):
        if k < 1:
            raise UserError(f"KNNMonitor k={k} is not valid: use 1 or more neighbours (20 is the standard)")
        check_temperature(temperature, example=0.07, owner="KNNMonitor")
        if every_n_epochs < 1:
            raise UserError(f"KNNMonitor every_n_epochs={every_n_epochs} is not valid: use 1 or more")
        self.k, self.temperature, self.every_n_epochs = k, temperature, every_n_epochs
        self.linear_probe, self.log_val_acc = linear_probe, log_val_acc
        self._val: list[torch.Tensor] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not (hasattr(pl_module, "prepare") and hasattr(pl_module, "eval_backbone")):
            raise UserError(f"KNNMonitor needs a lit-effdl method (BaseMethod); got {type(pl_module).__name__}")
        if not hasattr(trainer.datamodule, "inference_dataset"):
            raise UserError("KNNMonitor needs a lit-effdl data module (LabelBudgetDataModule) for its memory")

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val = []

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if trainer.sanity_checking:
            return
        with trainer.precision_plugin.val_step_context():
            features = pooled_features(pl_module.eval_backbone, pl_module.prepare(batch["image"])).float()
        self._val.append(torch.cat([batch["index"][:, None].float(), batch["target"][:, None].float(), features], 1))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self._val:
            return
        rows = torch.cat(self._val)
        if trainer.world_size > 1:  # every rank's shard (equal sizes: the sampler pads with repeats)
            rows = pl_module.all_gather(rows).flatten(0, 1)
        rows = unique_by_index(rows[:, 0].long(), rows[:, 1:])[1]
        val_y, val_x = rows[:, 0].long(), rows[:, 1:]
        self._val = []
        dm = trainer.datamodule
        labeled_x, labeled_y = self._memory(trainer, pl_module, "labeled") or (val_x[:0].cpu(), val_y[:0].cpu())
        acc_labeled = self._knn_accuracy(labeled_x, labeled_y, val_x, val_y, dm.num_classes)
        pl_module.log("val/knn_acc_labeled", acc_labeled, prog_bar=True)
        no_classifier = getattr(pl_module, "has_classifier", True) is False
        if self.log_val_acc or (self.log_val_acc is None and no_classifier):
            pl_module.log("val/acc", acc_labeled)
        last = is_last_validation(trainer)
        if last or (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            all_x, all_y = labeled_x, labeled_y
            pool = self._memory(trainer, pl_module, "unlabeled")
            if pool is not None:
                known = pool[1] >= 0  # loose files have no hidden label
                all_x, all_y = torch.cat([labeled_x, pool[0][known]]), torch.cat([labeled_y, pool[1][known]])
            pl_module.log("val/knn_acc", self._knn_accuracy(all_x, all_y, val_x, val_y, dm.num_classes))
        if last and self.linear_probe:
            accuracy = linear_probe_accuracy(labeled_x, labeled_y, val_x, val_y)
            if accuracy is not None:
                pl_module.log("val/linear_acc", accuracy)

    def _knn_accuracy(self, memory, memory_labels, queries, targets, num_classes: int) -> float:
        if len(memory) == 0:
            return float("nan")
        predicted = knn_predict(memory.to(queries.device), memory_labels.to(queries.device), queries,
                                num_classes, self.k, self.temperature)
        return float((predicted == targets).float().mean())

    @staticmethod
    def _memory(trainer: L.Trainer, pl_module: L.LightningModule, part: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(features, labels)`` of the ``labeled`` or ``unlabeled`` images (hidden labels, -1 unknown),
        no augmentation, sharded over DDP ranks and gathered; None when there are none."""
        dm = trainer.datamodule
        dataset = dm.inference_dataset(part)
        if len(dataset) == 0:
            return None
        targets = dm.labeled_targets() if part == "labeled" else dm.unlabeled_hidden_targets()

        def features(images: torch.Tensor) -> torch.Tensor:
            with trainer.precision_plugin.val_step_context():
                return pooled_features(pl_module.eval_backbone, pl_module.prepare(images)).float()

        out = predict_probs(features, dataset, batch_size=dm.eval_batch_size, device=pl_module.device, output="logits")
        return out["logits"], targets.long()[out["index"]]


def is_last_validation(trainer: L.Trainer) -> bool:
    """Whether this validation is the fit's last (max_epochs or max_steps reached, a stop requested),
    or a standalone ``validate``."""
    if trainer.state.fn != TrainerFn.FITTING:
        return True
    steps_done = trainer.max_steps is not None and 0 <= trainer.max_steps <= trainer.global_step
    epochs_done = trainer.max_epochs is not None and 0 <= trainer.max_epochs <= trainer.current_epoch + 1
    return steps_done or epochs_done or trainer.should_stop
