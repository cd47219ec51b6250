"""Augmentation: per-image ops, RandAugment, CutMix / Mixup, a batched on-device path, presets."""

from lit_effdl.augment.pipelines import build_pipeline, is_random_spec

__all__ = ["build_pipeline", "is_random_spec"]
