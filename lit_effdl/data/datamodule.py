"""`LabelBudgetDataModule`: source -> label-budget split -> views -> loaders.

Subclasses only pick a source (``load_sources``) and defaults. Batches are dicts:
``{"image", "target", "index"}`` for labeled data, and with ``unlabeled_ratio > 0`` the train
loader yields ``{"labeled": {...}, "unlabeled": {"weak", "strong", "index", "hidden_target"}}``
through Lightning's ``CombinedLoader``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset, RandomSampler

from lit_effdl.augment import BatchedPipeline, build_batched, build_pipeline
from lit_effdl.data.sources import ConcatSource, Sources, SubsetSource, loose_images_source  # noqa: F401 (Sources: re-exported)
from lit_effdl.data.label_selection import pool_paths, read_selected
from lit_effdl.data.splits import BudgetSplit, check_label_selection, label_budget_split
from lit_effdl.data.views import ImagesOnlyView, LabeledView, UnlabeledView
from lit_effdl.errors import UserError
from lit_effdl.io import write_json_atomic

SPLIT_FILE = "label_split.json"
AUGMENT_ON = ("loader", "device")
VIEWS = ("labeled", "weak", "strong")
PARTS = ("labeled", "unlabeled")


class LabelBudgetDataModule(L.LightningDataModule):
    """Labeled / unlabeled / validation / test splits under a label budget.

    Args:
        num_labels_per_class: labeled images per class (stratified); None with ``num_labels``
            None means every non-validation train image is labeled.
        num_labels: total labeled images, spread evenly over classes (instead of per class).
        label_selection: how labeled images are chosen: ``stratified`` by true class (the benchmark
            convention), ``random`` (``num_labels`` blind to class) or ``file`` (``label_selection_file``).
        label_selection_file: ``selection.csv`` file(s) of ``lit-effdl select`` naming the training-pool
            images to label (:mod:`lit_effdl.data.label_selection`); validation never holds one.
        split_seed: seed of the label-budget and validation draws.
        val_fraction: share of each class carved from train for validation when the dataset
            has no validation split.
        batch_size: labeled images per step (per device).
        unlabeled_ratio: mu, unlabeled images per labeled image in a step; 0 = no unlabeled loader.
        eval_batch_size: batch size of validation, test, predict and pseudo-labeling passes.
        labeled_augment: augmentation spec of labeled training images (see ``lit_effdl.augment``).
        unlabeled_weak_augment: spec of the weak view of unlabeled images.
        unlabeled_strong_augment: spec of the strong view of unlabeled images.
        labeled_samples_per_epoch: draw this many labeled samples (with replacement) per epoch,
            so tiny label budgets still give whole batches and a useful epoch length; it sets the epoch's
            steps for the unlabeled loader too (a larger pool: a fresh random subset each epoch).
        num_workers: DataLoader worker processes (None: 0 on CPU-only machines, else 4).
        pin_memory: pin host memory (None: when CUDA is available).
        predict_root: a folder of images that ``lit-effdl predict`` labels (default: test split).
        augment_on: where training views are augmented: ``loader`` (per image, in the DataLoader
            workers) or ``device`` (:meth:`on_after_batch_transfer` applies :mod:`lit_effdl.augment.batched`
            to whole batches of the views the method reads, in its ``augmented_views()`` order).

    Training batches reach the model augmented either way. What methods and callbacks may read
    (the data module's public interface; nothing here is ever written to by a model):

    - ``train_specs()``: the augmentation spec of each training view (``labeled``, ``weak``, ``strong``);
    - ``inference_dataset(part, view=None)``: ``labeled`` / ``unlabeled`` images as ``{"image", "index"}``
      through that view's per-image pipeline (None: none); ``unlabeled_inference_dataset()``: no view;
    - ``labeled_targets()``: labels of the labeled images; ``unlabeled_hidden_targets()``: true labels of the unlabeled images (diagnostics only, -1 if none);
    - ``device_pipelines()``: the batched pipeline of each view (``augment_on="device"``, else empty);
    - ``eval_batch_size``, ``unlabeled_ratio``, ``split`` (``.fingerprint()``), ``num_classes``,
      ``num_channels``, ``class_names``, ``image_size``.
    """

    default_weak = "weak"
    default_strong = "strong"

    def __init__(
        self,
        num_labels_per_class: int | None = None,
        num_labels: int | None = None,
        split_seed: int = 0,
        val_fraction: float = 0.1,
        batch_size: int = 64,
        unlabeled_ratio: int = 0,
        eval_batch_size: int = 256,
        labeled_augment: str | None = None,
        unlabeled_weak_augment: str | None = None,
        unlabeled_strong_augment: str | None = None,
        labeled_samples_per_epoch: int | None = None,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        predict_root: str | None = None,
        augment_on: Literal["loader", "device"] = "loader",
        label_selection: Literal["stratified", "random", "file"] = "stratified",
        label_selection_file: str | list[str] | None = None,
    ):
        super().__init__()
        if augment_on not in AUGMENT_ON:
            raise UserError(f"augment_on='{augment_on}' is not valid: use 'loader' or 'device'")
        if batch_size < 1:
            raise UserError(f"batch_size={batch_size} is not valid: use a positive integer")
        if unlabeled_ratio < 0:
            raise UserError(f"unlabeled_ratio={unlabeled_ratio} is not valid: use 0 or more")
        if not 0.0 <= val_fraction < 1.0:
            raise UserError(f"val_fraction={val_fraction} is not valid: use a value in [0, 1)")
        check_label_selection(label_selection, num_labels_per_class, num_labels, label_selection_file is not None)
        self.label_selection, self.label_selection_file = label_selection, label_selection_file
        self.num_labels_per_class = num_labels_per_class
        self.num_labels = num_labels
        self.split_seed = split_seed
        self.val_fraction = val_fraction
        self.batch_size = batch_size
        self.unlabeled_ratio = unlabeled_ratio
        self.eval_batch_size = eval_batch_size
        self.labeled_augment = labeled_augment if labeled_augment is not None else self.default_weak
        self.unlabeled_weak_augment = unlabeled_weak_augment or self.default_weak
        self.unlabeled_strong_augment = unlabeled_strong_augment or self.default_strong
        self.labeled_samples_per_epoch = labeled_samples_per_epoch
        cuda = torch.cuda.is_available()
        self.num_workers = (4 if cuda else 0) if num_workers is None else num_workers
        self.pin_memory = cuda if pin_memory is None else pin_memory
        self.predict_root = predict_root
        self.augment_on = augment_on
        self._device_pipelines: dict[str, BatchedPipeline] | None = None
        self._sources: Sources | None = None
        self.split: BudgetSplit | None = None

    # ------------------------------------------------------------ what subclasses provide
    def load_sources(self) -> Sources:
        raise NotImplementedError

    # ------------------------------------------------------------ facts the model is built from
    @property
    def sources(self) -> Sources:
        if self._sources is None:
            self._sources = self.load_sources()
        return self._sources

    @property
    def num_classes(self) -> int:
        return len(self.sources.train.classes)

    @property
    def num_channels(self) -> int:
        return self.sources.train.channels

    @property
    def class_names(self) -> list[str]:
        return list(self.sources.train.classes)

    @property
    def image_size(self) -> int:
        return int(self.sources.train.load(0).shape[-1])

    # ------------------------------------------------------------ splits
    def setup(self, stage: str | None = None) -> None:
        if self.split is not None:
            return
        train = self.sources.train
        val_fraction = 0.0 if self.sources.val is not None else self.val_fraction
        selected = (read_selected(self.label_selection_file, len(train), pool_paths(train), getattr(self, "root", None))
                    if self.label_selection == "file" else None)
        self.split = label_budget_split(train.targets, self.num_labels_per_class, self.num_labels, val_fraction,
                                        self.split_seed, self.label_selection, selected)
        self.labeled_source = SubsetSource(train, self.split.labeled)
        self.val_source = self.sources.val or SubsetSource(train, self.split.val)
        self.unlabeled_source = ConcatSource(
            [SubsetSource(train, self.split.unlabeled)]
            + ([self.sources.extra_unlabeled] if self.sources.extra_unlabeled is not None else [])
        )
        self._write_split_file()

    def _write_split_file(self) -> None:
        """The labeled indices beside the run's logs, so the run can be audited and repeated."""
        trainer = getattr(self, "trainer", None)
        log_dir = getattr(trainer, "log_dir", None) if trainer is not None else None
        if not log_dir or not trainer.loggers or not trainer.is_global_zero:
            return  # no logger: no run folder to audit (and never the working directory)
        payload = {"dataset": type(self).__name__, "split_seed": self.split_seed,
                   "num_labels_per_class": self.num_labels_per_class, "num_labels": self.num_labels,
                   "label_selection": self.label_selection, "label_selection_file": self.label_selection_file,
                   "fingerprint": self.split.fingerprint(), **self.split.to_dict()}
        write_json_atomic(Path(log_dir) / SPLIT_FILE, payload)

    # ------------------------------------------------------------ datasets
    def pipeline(self, spec: str | None):
        return build_pipeline(spec, self.image_size)

    def train_specs(self) -> dict[str, str]:
        """The augmentation spec of each training view, whichever side applies it."""
        return {"labeled": self.labeled_augment, "weak": self.unlabeled_weak_augment,
                "strong": self.unlabeled_strong_augment}

    def _loader_pipeline(self, view: str):
        """The per-image pipeline a training loader applies to ``view`` (none on the device path)."""
        return None if self.augment_on == "device" else self.pipeline(self.train_specs()[view])

    def labeled_dataset(self) -> Dataset:
        return LabeledView(self.labeled_source, self._loader_pipeline("labeled"))

    def unlabeled_dataset(self) -> Dataset:
        """Weak and strong views of the unlabeled set."""
        if len(self.unlabeled_source) == 0:
            raise UserError(
                "the unlabeled split is empty: set data.num_labels_per_class (or num_labels) below "
                "the class sizes, or give an unlabeled folder, for a semi-supervised method"
            )
        return UnlabeledView(self.unlabeled_source, self._loader_pipeline("weak"), self._loader_pipeline("strong"))

    def inference_dataset(self, part: str, view: str | None = None) -> Dataset:
        """``{"image", "index"}`` items of the ``labeled`` or ``unlabeled`` images, through the
        per-image pipeline of training ``view`` (``labeled`` / ``weak`` / ``strong``; None: none)."""
        if part not in PARTS:
            raise UserError(f"inference_dataset part='{part}' is not valid: use {' or '.join(PARTS)}")
        if view is not None and view not in VIEWS:
            raise UserError(f"inference_dataset view='{view}' is not valid: use None or {', '.join(VIEWS)}")
        source = self.labeled_source if part == "labeled" else self.unlabeled_source
        return ImagesOnlyView(source, None if view is None else self.pipeline(self.train_specs()[view]))

    def unlabeled_inference_dataset(self) -> Dataset:
        """The unlabeled images without augmentation, for pseudo-labeling passes."""
        return self.inference_dataset("unlabeled")

    def labeled_targets(self) -> torch.Tensor:
        """Labels of the labeled images (a k-NN memory or a probe may use them, as training does)."""
        return torch.as_tensor(self.labeled_source.targets, dtype=torch.long)

    def unlabeled_hidden_targets(self) -> torch.Tensor:
        """True labels of the unlabeled images (-1 where unknown): for diagnostics, never training."""
        return torch.as_tensor(self.unlabeled_source.targets, dtype=torch.long)

    # ------------------------------------------------------------ augmentation on the device
    def device_pipelines(self) -> dict[str, BatchedPipeline]:
        """View -> batched pipeline with ``augment_on="device"`` (built once), else empty."""
        if self.augment_on != "device":
            return {}
        if self._device_pipelines is None:
            built = {view: build_batched(spec) for view, spec in self.train_specs().items()}
            self._device_pipelines = {view: p for view, p in built.items() if p is not None}
        return self._device_pipelines

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Augment a training batch's views on its device: the views the method reads
        (``augmented_views()``, default labeled, weak, strong), in that order."""
        trainer = self.trainer
        if self.augment_on != "device" or trainer is None or not trainer.training:
            return batch
        pipelines = self.device_pipelines()
        wanted = getattr(trainer.lightning_module, "augmented_views", lambda: VIEWS)()
        for view in wanted:
            if view not in pipelines or (view != "labeled" and "unlabeled" not in batch):
                continue
            part, key = (batch.get("labeled", batch), "image") if view == "labeled" else (batch["unlabeled"], view)
            part[key] = pipelines[view](part[key])
        return batch

    # ------------------------------------------------------------ loaders
    def loader(self, dataset: Dataset, batch_size: int, train: bool, sampler=None) -> DataLoader:
        return DataLoader(dataset, batch_size=batch_size, shuffle=train and sampler is None, sampler=sampler,
                          drop_last=train and len(dataset) >= batch_size, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, pin_memory=self.pin_memory)

    def labeled_loader(self) -> DataLoader:
        dataset = self.labeled_dataset()
        sampler = None
        if self.labeled_samples_per_epoch:
            sampler = RandomSampler(dataset, replacement=True, num_samples=self.labeled_samples_per_epoch)
        return self.loader(dataset, self.batch_size, train=True, sampler=sampler)

    def train_dataloader(self):
        """Labeled batches, or ``{"labeled", "unlabeled"}`` pairs; an epoch is the longer loader, except that
        ``labeled_samples_per_epoch`` caps it: an unlabeled pool longer than that draws only as many batches."""
        labeled = self.labeled_loader()
        if self.unlabeled_ratio == 0:
            return labeled
        dataset, batch = self.unlabeled_dataset(), self.batch_size * self.unlabeled_ratio
        steps, sampler = len(labeled), None
        if self.labeled_samples_per_epoch and len(dataset) // batch > steps:  # a fresh random subset each epoch
            sampler = RandomSampler(dataset, num_samples=steps * batch)
        unlabeled = self.loader(dataset, batch, train=True, sampler=sampler)
        return CombinedLoader({"labeled": labeled, "unlabeled": unlabeled}, mode="max_size_cycle")

    def val_dataloader(self) -> DataLoader:
        return self.loader(LabeledView(self.val_source), self.eval_batch_size, train=False)

    def test_dataloader(self) -> DataLoader:
        return self.loader(LabeledView(self.sources.test), self.eval_batch_size, train=False)

    def predict_dataloader(self) -> DataLoader:
        self.predict_source = (loose_images_source(self.predict_root, self.class_names, self.image_size,
                                                   self.num_channels) if self.predict_root else self.sources.test)
        return self.loader(ImagesOnlyView(self.predict_source), self.eval_batch_size, train=False)

