"""Margin sampling: the images whose two most probable classes are closest (for later rounds, once
a model's predictions mean something)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from lit_effdl.select.common import Selection, as_probabilities, labeled_mask, top_scores


def margin(probabilities: np.ndarray, budget: int, labeled: Iterable[int] | None = None, seed: int = 0) -> Selection:
    """The ``budget`` unlabeled rows of smallest top-1 minus top-2 probability (score: 1 - margin),
    ties by position; ``seed`` unused (deterministic)."""
    p = as_probabilities(probabilities)
    top2 = np.sort(p, axis=1)[:, -2:]
    uncertainty = 1.0 - (top2[:, 1] - top2[:, 0])
    chosen = top_scores(uncertainty, labeled_mask(len(p), labeled, budget), budget)
    return Selection(chosen, uncertainty[chosen].astype(np.float64), np.full(budget, -1, dtype=np.int64))
