"""Choosing what to label: one strategy a file, pure functions on embeddings or probabilities.

Every strategy takes what it ranks (``embeddings`` (N, D), ``probabilities`` (N, C), or for
``random`` only the pool size), a ``budget``, the ``labeled`` pool positions (a rounds run's earlier
choices, never chosen again) and a ``seed``, and returns a :class:`Selection`. ``lit-effdl select``
(:mod:`lit_effdl.select.command`) computes the inputs from a config and a checkpoint and writes
``selection.csv``. See docs/selection.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal

import numpy as np

from lit_effdl.errors import UserError
from lit_effdl.select import entropy, kmeans_centers, margin, probcover, random, typiclust
from lit_effdl.select.common import Selection

Needs = Literal["nothing", "embeddings", "probabilities"]

# name -> (function, what it ranks)
STRATEGIES: dict[str, tuple[Callable[..., Selection], Needs]] = {
    "random": (random.random_selection, "nothing"),
    "kmeans_centers": (kmeans_centers.kmeans_centers, "embeddings"),
    "typiclust": (typiclust.typiclust, "embeddings"),
    "probcover": (probcover.probcover, "embeddings"),
    "margin": (margin.margin, "probabilities"),
    "entropy": (entropy.entropy, "probabilities"),
}


def needs(strategy: str) -> Needs:
    """What ``strategy`` ranks: ``nothing`` (random), ``embeddings`` or ``probabilities``."""
    if strategy not in STRATEGIES:
        raise UserError(f"strategy '{strategy}' is not valid: use one of {', '.join(STRATEGIES)}")
    return STRATEGIES[strategy][1]


def run_strategy(strategy: str, values: np.ndarray | int, budget: int, labeled: Iterable[int] | None = None,
                 seed: int = 0, **options) -> Selection:
    """``strategy`` on ``values`` (embeddings, probabilities, or the pool size for ``random``)."""
    needs(strategy)
    return STRATEGIES[strategy][0](values, budget, labeled, seed, **options)


__all__ = ["STRATEGIES", "Selection", "needs", "run_strategy"]
