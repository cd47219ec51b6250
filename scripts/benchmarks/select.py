"""Selection at MNIST scale: wall time of ``typiclust`` and ``probcover`` on 60,000 x 128 embeddings.

The target: ``select`` on the 60,000-image pool with 128-d embeddings in under 2 minutes on
2 cores, with no O(N^2) memory. The embeddings: 10 Gaussian clusters of unequal sizes (the largest
10x the smallest) around random unit centres, rows scaled to unit length (as ``lit-effdl select``
scales features). They are well separated: ProbCover's purity delta then spans whole clusters, the
densest graph there is, so its edge cap (``MAX_EDGES``) and smaller delta are timed too. Budget 10
(one label per class on average), no labeled set; each strategy timed from the embeddings to the
choice (k-means, neighbour / distance passes, greedy), median of ``--repeats`` (default 1), peak RSS
reported. ``--quick``: 3,000 points. ``python scripts/bench.py select --json``.
"""

from __future__ import annotations

import resource
import time

import numpy as np
import torch

from benchmarks._timing import print_table

POOL, DIMS, CLUSTERS, BUDGET = 60_000, 128, 10, 10
TARGET_S = 120.0


def cluster_embeddings(n: int, dims: int = DIMS, clusters: int = CLUSTERS, spread: float = 0.45,
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(embeddings, cluster of each row)``: unit rows around ``clusters`` random unit centres,
    cluster sizes proportional to 1..clusters (the largest 10x the smallest)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dims))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = np.arange(1, clusters + 1) / np.arange(1, clusters + 1).sum()
    labels = rng.choice(clusters, size=n, p=weights)
    x = centres[labels] + rng.normal(scale=spread / np.sqrt(dims), size=(n, dims))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


def run(args) -> dict:
    from lit_effdl.select import run_strategy

    quick = getattr(args, "quick", False)
    repeats = getattr(args, "repeats", None) or 1
    n = 3_000 if quick else POOL
    x, truth = cluster_embeddings(n)
    result = {"pool": n, "dims": DIMS, "budget": BUDGET, "threads": torch.get_num_threads(), "repeats": repeats,
              "target_s": TARGET_S}
    rows = []
    for strategy in ("typiclust", "probcover"):
        options = {"num_classes": CLUSTERS} if strategy == "probcover" else {}
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            chosen = run_strategy(strategy, x, BUDGET, seed=0, **options)
            times.append(time.perf_counter() - start)
        seconds = float(np.median(times))
        covered = len(set(truth[chosen.indices].tolist()))
        result[strategy] = {"seconds": round(seconds, 2), "clusters_covered": covered,
                            "info": {k: round(v, 4) if isinstance(v, float) else v for k, v in chosen.info.items()}}
        rows.append((strategy, f"{seconds:.1f} s, {covered}/{CLUSTERS} clusters covered, {chosen.info or ''}"))
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result["under_target"] = all(result[s]["seconds"] < TARGET_S for s in ("typiclust", "probcover"))
    rows.append(("peak RSS", f"{result['peak_rss_mb']} MB"))
    print_table(f"select: {n} x {DIMS} embeddings, budget {BUDGET}, {result['threads']} threads", rows)
    return result
