"""Augmentation: per-image ops, RandAugment, CutMix / Mixup, a batched on-device path, presets."""

from lit_effdl.augment.pipelines import PRESETS, build_pipeline, expand_spec, is_random_spec
from lit_effdl.augment.randaugment import RA_OPS, RandAugment
from lit_effdl.augment.batched import BatchedPipeline, build_batched
from lit_effdl.augment.mix import Mix

__all__ = [
    "PRESETS", "build_pipeline", "expand_spec", "is_random_spec", "RA_OPS", "RandAugment",
    "BatchedPipeline", "build_batched", "Mix",
]
