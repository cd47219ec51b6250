"""k-means centres: one image per cluster of the unlabeled embeddings, the one nearest the centre."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from lit_effdl.select.common import Selection, as_matrix, kmeans, labeled_mask


def kmeans_centers(embeddings: np.ndarray, budget: int, labeled: Iterable[int] | None = None,
                   seed: int = 0) -> Selection:
    """k-means of the unlabeled embeddings into ``budget`` clusters; from each, the point nearest its
    centre (score: minus that distance), largest clusters first."""
    x = as_matrix(embeddings, "embeddings")
    free = np.flatnonzero(~labeled_mask(len(x), labeled, budget))
    clusters, centres = kmeans(x[free], budget, seed)
    distance = np.linalg.norm(x[free] - centres[clusters], axis=1)
    sizes = np.bincount(clusters, minlength=len(centres))
    picked = []
    for c in np.lexsort((np.arange(len(sizes)), -sizes)):  # largest first, ties by cluster id
        members = np.flatnonzero(clusters == c)
        if len(members):  # k-means can leave a cluster empty when points repeat
            picked.append(members[np.argmin(distance[members])])
    if len(picked) < budget:  # fewer distinct clusters than the budget: the rest nearest their centres
        rest = np.setdiff1d(np.arange(len(free)), picked)
        picked += rest[np.argsort(distance[rest], kind="stable")[: budget - len(picked)]].tolist()
    picked = np.asarray(picked, dtype=np.int64)
    return Selection(free[picked], -distance[picked].astype(np.float64), clusters[picked])
