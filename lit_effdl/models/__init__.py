"""Networks: the backbone factory and small-input architectures."""

from lit_effdl.models.factory import available_backbones, create_backbone

__all__ = ["create_backbone", "available_backbones"]
