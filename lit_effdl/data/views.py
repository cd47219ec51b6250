"""Small Dataset wrappers over a source: labeled samples, and weak + strong views of unlabeled ones."""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils.data import Dataset

from lit_effdl.data.sources import ImageSource

Transform = Callable[[torch.Tensor], torch.Tensor] | None


def _apply(transform: Transform, image: torch.Tensor) -> torch.Tensor:
    return image if transform is None else transform(image)


class LabeledView(Dataset):
    """``{"image", "target", "index"}``; ``index`` is the position in this view."""

    def __init__(self, source: ImageSource, transform: Transform = None):
        self.source = source
        self.transform = transform

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor | int]:
        return {
            "image": _apply(self.transform, self.source.load(i)),
            "target": int(self.source.targets[i]),
            "index": i,
        }


class UnlabeledView(Dataset):
    """``{"weak", "strong", "index", "hidden_target"}`` for each unlabeled image.

    ``hidden_target`` is the true label where the dataset has one (else -1); methods must never
    train on it: it exists for diagnostics such as the accuracy of kept pseudo-labels.
    """

    def __init__(self, source: ImageSource, weak: Transform = None, strong: Transform = None):
        self.source = source
        self.weak = weak
        self.strong = strong

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor | int]:
        image = self.source.load(i)
        return {
            "weak": _apply(self.weak, image),
            "strong": _apply(self.strong, image),
            "index": i,
            "hidden_target": int(self.source.targets[i]),
        }


class ImagesOnlyView(LabeledView):
    """``{"image", "index"}``: what inference over an unlabeled set needs, no augmentation."""

    def __getitem__(self, i: int) -> dict[str, torch.Tensor | int]:
        return {"image": _apply(self.transform, self.source.load(i)), "index": i}
