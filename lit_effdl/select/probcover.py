"""ProbCover (Yehuda, Dekel, Hacohen & Weinshall, NeurIPS 2022): greedy maximum coverage of
delta-balls in the embedding space; for the smallest budgets.

delta by the paper's purity rule: the largest delta for which at least ``alpha`` (0.95) of the
balls hold a single k-means pseudo-label (k = the number of classes). A ball around x is pure iff
delta <= the distance from x to its nearest point of another pseudo-label, so delta is a quantile
of those distances, found in one chunked pass (over 10,000 random rows of a larger pool). The graph
(x -> y when |x - y| < delta) is kept as sparse rows built chunk by chunk: memory O(N x chunk +
edges), never O(N^2); at most ``MAX_EDGES`` edges (a denser purity delta is lowered to fit).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch

from lit_effdl.errors import UserError
from lit_effdl.select.common import Selection, as_matrix, kmeans, labeled_mask

ALPHA = 0.95
CHUNK = 512  # rows of the distance matrix held at once
PURITY_ROWS = 10_000  # a larger pool estimates the purity of its balls on this many random rows
SAMPLE_ROWS = 2048  # rows whose distances estimate the edge count of a delta
MAX_EDGES = 250_000_000  # 1 GB of int32 neighbours; a denser graph lowers delta (recorded in info)


def _squared_distances(x: torch.Tensor, rows: torch.Tensor, chunk: int = CHUNK):
    """``(start, rows[start:start + chunk], their squared distances to every point)``, each row's
    distance to itself exactly 0: one matrix product a chunk, O(chunk x N) memory."""
    norms = x.square().sum(dim=1)
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        block = torch.addmm(norms[None, :], x[part], x.T, alpha=-2.0).add_(norms[part, None])
        block[torch.arange(len(part)), part] = 0.0
        yield start, part, block


def _sample(count: int, size: int, seed: int) -> torch.Tensor:
    if count <= size:
        return torch.arange(count)
    return torch.from_numpy(np.sort(np.random.default_rng(seed).choice(count, size, replace=False)))


def purity_delta(embeddings: np.ndarray, pseudo_labels: np.ndarray, alpha: float = ALPHA, seed: int = 0) -> float:
    """The largest delta whose balls are pure (one pseudo-label) for at least ``alpha`` of the points
    (of ``PURITY_ROWS`` random ones in a larger pool)."""
    x, labels = torch.from_numpy(embeddings), torch.from_numpy(pseudo_labels)
    rows = _sample(len(x), PURITY_ROWS, seed)
    nearest_other = torch.empty(len(rows))
    for start, part, block in _squared_distances(x, rows):
        block.masked_fill_(labels[part, None] == labels[None, :], math.inf)
        nearest_other[start:start + len(part)] = block.min(dim=1).values
    needed = math.ceil(alpha * len(rows))  # at least this many balls pure: delta <= their nearest_other
    return math.sqrt(max(0.0, float(torch.sort(nearest_other, descending=True).values[needed - 1])))


def edge_capped_delta(embeddings: np.ndarray, delta: float, max_edges: int = MAX_EDGES, seed: int = 0,
                      bins: int = 1000) -> float:
    """``delta``, or a smaller one whose graph an estimate from ``SAMPLE_ROWS`` random rows (a
    histogram of their distances to every point) puts at 90% of ``max_edges``."""
    x = torch.from_numpy(embeddings)
    rows = _sample(len(x), SAMPLE_ROWS, seed)
    histogram = torch.zeros(bins, dtype=torch.float64)
    for _, _, block in _squared_distances(x, rows):
        histogram += torch.histc(block[block < delta**2], bins, 0.0, delta**2).double()
    estimate = torch.cumsum(histogram, 0) * len(x) / len(rows)  # edges below each bin's upper edge
    if estimate[-1] <= max_edges:
        return delta
    fitting = torch.nonzero(estimate <= 0.9 * max_edges)
    return delta * math.sqrt((int(fitting[-1]) + 1 if len(fitting) else 1) / bins)


def ball_graph(embeddings: np.ndarray, delta: float,
               max_edges: int = MAX_EDGES) -> tuple[np.ndarray, np.ndarray] | None:
    """CSR rows ``(indptr, neighbours)`` of the delta-ball graph (each point in its own ball); None
    when it would hold more than ``max_edges`` edges."""
    x = torch.from_numpy(embeddings)
    counts, neighbours, total = np.zeros(len(x), dtype=np.int64), [], 0
    for start, part, block in _squared_distances(x, torch.arange(len(x))):
        rows, cols = torch.nonzero(block < delta**2, as_tuple=True)
        total += len(cols)
        if total > max_edges:
            return None
        counts[start:start + len(part)] = torch.bincount(rows, minlength=len(part)).numpy()
        neighbours.append(cols.to(torch.int32).numpy())
    return np.concatenate([[0], np.cumsum(counts)]), np.concatenate(neighbours)


def probcover(embeddings: np.ndarray, budget: int, labeled: Iterable[int] | None = None, seed: int = 0,
              num_classes: int = 10, alpha: float = ALPHA, delta: float | None = None,
              max_edges: int = MAX_EDGES) -> Selection:
    """``budget`` images by greedy coverage: each pick the point whose delta-ball covers the most
    points not yet covered (score: that count), the labeled images' balls covered first; once all
    is covered, the rest at random (seeded). ``delta``: None for the purity rule with ``num_classes``
    pseudo-labels. ``info``: delta, the share covered, edges."""
    x = as_matrix(embeddings, "embeddings")
    taken = labeled_mask(len(x), labeled, budget)
    if not 0 < alpha <= 1:
        raise UserError(f"alpha={alpha} is not valid: use a purity share in (0, 1]")
    pseudo = kmeans(x, num_classes, seed)[0]
    if delta is None:
        if len(np.unique(pseudo)) < 2:
            raise UserError(f"probcover's purity rule needs at least 2 pseudo-label clusters: "
                            f"num_classes={num_classes} gave {len(np.unique(pseudo))}")
        delta = purity_delta(x, pseudo, alpha, seed)
    info = {"delta": delta}
    delta = edge_capped_delta(x, delta, max_edges, seed)
    while (graph := ball_graph(x, delta, max_edges=max_edges)) is None:
        delta *= 0.95  # the estimate was low
    if delta < info["delta"]:  # the purity delta joins too many points: smaller balls, so the graph fits
        info.update(purity_delta=info["delta"], delta=delta)
    indptr, neighbours = graph
    degree, covered = np.diff(indptr), np.zeros(len(x), dtype=bool)

    def cover(point: int) -> int:
        new = neighbours[indptr[point]:indptr[point + 1]]
        new = new[~covered[new]]
        covered[new] = True
        if len(new):  # covered now: no ball holding them gains by them any more (the graph is symmetric)
            holders = np.concatenate([neighbours[indptr[y]:indptr[y + 1]] for y in new])
            degree[:] -= np.bincount(holders, minlength=len(degree))
        return len(new)

    for point in np.flatnonzero(taken):
        cover(point)
    picked, scores = [], []
    for _ in range(budget):
        gains = np.where(taken, -1, degree)
        if gains.max() <= 0:
            break
        point = int(np.argmax(gains))
        taken[point] = True
        picked.append(point)
        scores.append(cover(point))
    if len(picked) < budget:  # everything covered: random among the rest
        rest = np.random.default_rng(seed).permutation(np.flatnonzero(~taken))[: budget - len(picked)]
        picked += rest.tolist()
        scores += [0] * len(rest)
    info.update(coverage=float(covered.mean()), edges=int(indptr[-1]), pseudo_labels=num_classes)
    picked = np.asarray(picked, dtype=np.int64)
    return Selection(picked, np.asarray(scores, dtype=np.float64), pseudo[picked], info)
