"""What every strategy shares: the result type, input checks and k-means."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from lit_effdl.errors import UserError

KMEANS_FULL_MAX_K = 50  # above this many clusters MiniBatchKMeans (as the TypiClust code does)


@dataclass
class Selection:
    """The chosen pool positions in choice order, each with the strategy's score (higher: preferred;
    NaN for ``random``) and its cluster (-1 where the strategy has none); ``info``: e.g. ProbCover's delta."""

    indices: np.ndarray
    scores: np.ndarray
    clusters: np.ndarray
    info: dict = field(default_factory=dict)


def as_matrix(values: np.ndarray, name: str) -> np.ndarray:
    """A finite float32 ``(N, D)`` array, else a ``UserError``."""
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2 or len(values) == 0:
        raise UserError(f"{name} must be a non-empty (N, D) array, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise UserError(f"{name} hold NaN or infinite values: check the embedding network")
    return values


def labeled_mask(pool_size: int, labeled: Iterable[int] | None, budget: int) -> np.ndarray:
    """Boolean mask of the already-labeled positions, the budget checked against what is left."""
    labeled = np.asarray(list(labeled) if labeled is not None else [], dtype=np.int64)
    if len(labeled) and (labeled.min() < 0 or labeled.max() >= pool_size):
        bad = labeled[(labeled < 0) | (labeled >= pool_size)][:5].tolist()
        raise UserError(f"labeled indices {bad} are not in the pool: use 0..{pool_size - 1}")
    if len(np.unique(labeled)) != len(labeled):
        raise UserError("labeled indices repeat: each image may be labeled once")
    left = pool_size - len(labeled)
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or not 0 < budget <= left:
        raise UserError(f"budget={budget} is not valid: use 1..{left} (the pool's {pool_size} images "
                        f"less the {len(labeled)} already labeled)")
    mask = np.zeros(pool_size, dtype=bool)
    mask[labeled] = True
    return mask


def kmeans(x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, centres)`` of k-means (k-means++ start, seeded): full Lloyd up to 50 clusters,
    mini-batch above. scikit-learn's, in its O(N k) memory."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    k = max(1, min(int(k), len(x)))
    if k <= KMEANS_FULL_MAX_K:
        model = KMeans(k, n_init=1, random_state=seed)
    else:
        model = MiniBatchKMeans(k, n_init=3, batch_size=4096, random_state=seed)
    labels = model.fit_predict(x)
    return labels.astype(np.int64), model.cluster_centers_.astype(np.float32)


def top_scores(scores: np.ndarray, taken: np.ndarray, budget: int) -> np.ndarray:
    """Positions of the ``budget`` highest scores outside ``taken``, highest first, ties by position."""
    candidates = np.flatnonzero(~taken)
    order = np.lexsort((candidates, -scores[candidates]))
    return candidates[order[:budget]]


def as_probabilities(values: np.ndarray) -> np.ndarray:
    """Rows of class probabilities (>= 2 classes, each row in [0, 1] summing to 1), else a ``UserError``."""
    p = as_matrix(values, "probabilities")
    if p.shape[1] < 2:
        raise UserError(f"probabilities need at least 2 classes, got shape {p.shape}")
    if (p < 0).any() or (p > 1).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-3):
        raise UserError("probabilities must lie in [0, 1] and sum to 1 per row: pass softmax outputs, not logits")
    return p
