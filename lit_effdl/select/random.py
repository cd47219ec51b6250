"""Random selection: the class-blind baseline every other strategy is measured against."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from lit_effdl.select.common import Selection, labeled_mask


def random_selection(pool_size: int, budget: int, labeled: Iterable[int] | None = None, seed: int = 0) -> Selection:
    """``budget`` positions of ``0..pool_size-1`` outside ``labeled``, drawn uniformly (seeded)."""
    taken = labeled_mask(pool_size, labeled, budget)
    chosen = np.random.default_rng(seed).choice(np.flatnonzero(~taken), size=budget, replace=False)
    return Selection(chosen.astype(np.int64), np.full(budget, np.nan), np.full(budget, -1, dtype=np.int64))
