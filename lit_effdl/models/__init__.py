"""Networks: the backbone factory and small-input architectures."""

from lit_effdl.models.factory import available_backbones, create_backbone
from lit_effdl.models.loading import load_body

__all__ = ["create_backbone", "available_backbones", "load_body"]
