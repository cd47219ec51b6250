"""TypiClust (Hacohen, Dekel & Weinshall, ICML 2022): the most typical image of each large cluster
that holds no label yet; for the cold start, when a few labels must cover the data's modes.

Typicality(x) = 1 / mean distance from x to its K nearest neighbours, inside x's cluster. The
paper's constants: K = 20 (half the cluster when smaller), at most 500 clusters, clusters of 5
or fewer images skipped.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from lit_effdl.select.common import Selection, as_matrix, kmeans, labeled_mask

K_NEIGHBORS = 20
MAX_CLUSTERS = 500
MIN_CLUSTER_SIZE = 5


def typicality(points: np.ndarray, k_neighbors: int = K_NEIGHBORS) -> np.ndarray:
    """1 / (mean Euclidean distance to the ``k`` nearest other points + 1e-5), ``k`` at most half the
    points (brute force in scikit-learn's bounded-memory chunks)."""
    from sklearn import config_context
    from sklearn.neighbors import NearestNeighbors

    k = max(1, min(k_neighbors, len(points) // 2))
    if len(points) < 2:
        return np.ones(len(points))
    with config_context(working_memory=256):  # MB per distance chunk
        distances, _ = NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(points).kneighbors(points)
    return 1.0 / (distances[:, 1:].mean(axis=1) + 1e-5)  # column 0: the point itself


def typiclust(embeddings: np.ndarray, budget: int, labeled: Iterable[int] | None = None, seed: int = 0,
              k_neighbors: int = K_NEIGHBORS, max_clusters: int = MAX_CLUSTERS,
              min_cluster_size: int = MIN_CLUSTER_SIZE) -> Selection:
    """``budget`` images: k-means into min(labeled + budget, ``max_clusters``) clusters; clusters
    with the fewest labeled images first, largest first among those; from each in turn its most
    typical unlabeled image (score: typicality), round-robin when the budget exceeds the clusters."""
    x = as_matrix(embeddings, "embeddings")
    available = ~labeled_mask(len(x), labeled, budget)
    clusters, _ = kmeans(x, min(int((~available).sum()) + budget, max_clusters), seed)
    sizes = np.bincount(clusters)
    labeled_counts = np.bincount(clusters[~available], minlength=len(sizes))

    def in_order(ids: np.ndarray) -> np.ndarray:  # fewest labeled first, then largest, then by id
        return ids[np.lexsort((ids, -sizes[ids], labeled_counts[ids]))]

    queue = in_order(np.flatnonzero(sizes > min_cluster_size))
    picked, scores, picked_clusters = [], [], []
    step = 0
    while len(picked) < budget:
        if not available[np.isin(clusters, queue)].any():  # small clusters too, once the large are used up
            queue = in_order(np.unique(clusters[available]))
        cluster = queue[step % len(queue)]
        step += 1
        members = np.flatnonzero((clusters == cluster) & available)
        if not len(members):
            continue
        score = typicality(x[members], k_neighbors)
        best = int(np.argmax(score))
        picked.append(members[best])
        scores.append(score[best])
        picked_clusters.append(cluster)
        available[members[best]] = False
    return Selection(np.asarray(picked, dtype=np.int64), np.asarray(scores, dtype=np.float64),
                     np.asarray(picked_clusters, dtype=np.int64))
