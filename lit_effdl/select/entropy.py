"""Entropy sampling: the images whose predicted class distribution is most spread (later rounds)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from lit_effdl.select.common import Selection, as_probabilities, labeled_mask, top_scores


def entropy(probabilities: np.ndarray, budget: int, labeled: Iterable[int] | None = None, seed: int = 0) -> Selection:
    """The ``budget`` unlabeled rows of highest predictive entropy (score: entropy in nats), ties by
    position; ``seed`` unused (deterministic)."""
    p = as_probabilities(probabilities).astype(np.float64)
    spread = -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=1)
    chosen = top_scores(spread, labeled_mask(len(p), labeled, budget), budget)
    return Selection(chosen, spread[chosen], np.full(budget, -1, dtype=np.int64))
