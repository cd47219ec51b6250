"""lit-effdl: annotation-data-efficient image classification on PyTorch Lightning."""

__version__ = "0.1.0"
