"""Selection strategies on constructed cases whose right answer is known, determinism, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from lit_effdl.errors import UserError
from lit_effdl.select import STRATEGIES, run_strategy
from lit_effdl.select.probcover import ball_graph, purity_delta

SIZES = (100, 50, 20)
CENTRES = np.array([[0.0, 0.0, 0.0, 0.0], [12.0, 0.0, 0.0, 0.0], [0.0, 12.0, 0.0, 0.0]])


def three_clusters(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three well-separated Gaussian clusters of 100, 50 and 20 points (unit spread, 4-d), shuffled."""
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(3), SIZES)
    x = CENTRES[truth] + rng.normal(size=(len(truth), CENTRES.shape[1]))
    order = rng.permutation(len(truth))
    return x[order].astype(np.float32), truth[order]


def run(strategy: str, x, budget: int, **kwargs):
    values = len(x) if strategy == "random" else x
    options = {"num_classes": 3} if strategy == "probcover" else {}
    return run_strategy(strategy, values, budget, **options, **kwargs)


@pytest.mark.parametrize("strategy", ["typiclust", "kmeans_centers"])
def test_one_typical_point_near_each_centre_largest_cluster_first(strategy):
    x, truth = three_clusters()
    chosen = run(strategy, x, 3)
    assert truth[chosen.indices].tolist() == [0, 1, 2]  # every cluster, the largest (densest) first
    for i in chosen.indices:  # a central point of its cluster, not an outlier: in the central quarter
        members = x[truth == truth[i]]
        distances = np.linalg.norm(members - members.mean(axis=0), axis=1)
        assert (distances < np.linalg.norm(x[i] - members.mean(axis=0))).mean() < 0.25
    assert len(set(chosen.clusters.tolist())) == 3


def test_typiclust_score_is_inverse_mean_distance_to_20_neighbours_within_the_cluster():
    from lit_effdl.select.typiclust import typicality

    x, truth = three_clusters()
    chosen = run("typiclust", x, 1)
    members = x[truth == 0]
    distances = np.sort(np.linalg.norm(members[:, None] - members[None], axis=2), axis=1)[:, 1:21]
    expected = 1.0 / (distances.mean(axis=1) + 1e-5)
    assert np.allclose(typicality(members), expected, rtol=1e-4)
    assert chosen.scores[0] == pytest.approx(expected.max(), rel=1e-4)


def test_probcover_covers_each_cluster_with_one_ball():
    x, truth = three_clusters()
    chosen = run("probcover", x, 3)
    assert truth[chosen.indices].tolist() == [0, 1, 2]  # the largest ball first
    assert chosen.info["coverage"] == 1.0
    assert chosen.scores.sum() == len(x)  # each pick's score: the points it newly covers


def test_purity_rule_picks_the_largest_delta_with_enough_pure_balls():
    """1-d points 0, 1, 2 (pseudo-label 0) and 10, 11 (label 1): distance to the nearest other label
    10, 9, 8, 8, 9. All 5 balls pure up to delta 8; 3 of 5 up to 9."""
    x = np.array([[0.0], [1.0], [2.0], [10.0], [11.0]], dtype=np.float32)
    labels = np.array([0, 0, 0, 1, 1])
    assert purity_delta(x, labels, alpha=0.95) == pytest.approx(8.0)
    assert purity_delta(x, labels, alpha=0.6) == pytest.approx(9.0)


def test_ball_graph_rows_are_the_points_within_delta():
    x = np.random.default_rng(1).normal(size=(300, 5)).astype(np.float32)
    indptr, neighbours = ball_graph(x, 1.5)
    distances = np.linalg.norm(x[:, None] - x[None], axis=2)
    for i in (0, 17, 299):
        assert sorted(neighbours[indptr[i]:indptr[i + 1]].tolist()) == np.flatnonzero(distances[i] < 1.5).tolist()
    assert ball_graph(x, 1.5, max_edges=10) is None


def test_probcover_lowers_delta_when_the_purity_graph_is_too_dense():
    x, _ = three_clusters()
    chosen = run("probcover", x, 3, max_edges=2000)
    assert chosen.info["edges"] <= 2000 < (np.array(SIZES) ** 2).sum()
    assert chosen.info["delta"] < chosen.info["purity_delta"]


@pytest.mark.parametrize("strategy", ["typiclust", "probcover", "kmeans_centers"])
def test_next_round_avoids_clusters_already_labeled(strategy):
    x, truth = three_clusters()
    labeled = np.flatnonzero(truth == 0)[:1]
    chosen = run(strategy, x, 2, labeled=labeled)
    assert labeled[0] not in chosen.indices
    if strategy != "kmeans_centers":  # k-means centres only leaves the labeled images out
        assert sorted(truth[chosen.indices].tolist()) == [1, 2]


PROBABILITIES = np.array([
    [1.00, 0.00, 0.00],  # certain
    [0.50, 0.50, 0.00],  # smallest margin (0), entropy ln 2
    [0.40, 0.30, 0.30],  # margin 0.1, highest entropy
    [0.90, 0.05, 0.05],
])


@pytest.mark.parametrize("strategy, expected", [("margin", [1, 2, 3]), ("entropy", [2, 1, 3])])
def test_uncertainty_picks_the_known_most_uncertain_rows(strategy, expected):
    assert run(strategy, PROBABILITIES, 3).indices.tolist() == expected
    assert run(strategy, PROBABILITIES, 2, labeled=[expected[0]]).indices.tolist() == expected[1:]


def test_random_is_seeded_and_skips_labeled():
    a, b, c = (run("random", np.zeros((50, 1)), 10, labeled=range(20), seed=s) for s in (0, 0, 1))
    assert a.indices.tolist() == b.indices.tolist() != c.indices.tolist()
    assert a.indices.min() >= 20 and len(set(a.indices.tolist())) == 10


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_same_seed_same_choice(strategy):
    x, _ = three_clusters(seed=3)
    values = PROBABILITIES if strategy in ("margin", "entropy") else x
    first, again = run(strategy, values, 2, seed=5), run(strategy, values, 2, seed=5)
    assert first.indices.tolist() == again.indices.tolist()
    assert np.array_equal(first.scores, again.scores, equal_nan=True)


@pytest.mark.parametrize("budget, labeled, message", [
    (0, None, r"budget=0 is not valid: use 1\.\.170"),
    (171, None, r"budget=171 is not valid: use 1\.\.170"),
    (170, [0], r"budget=170 is not valid: use 1\.\.169 .*1 already labeled"),
    (3, [0, 0], r"labeled indices repeat"),
    (3, [170], r"labeled indices \[170\] are not in the pool: use 0\.\.169"),
])
@pytest.mark.parametrize("strategy", ["random", "typiclust", "probcover"])
def test_bad_budget_or_labeled_set_is_one_clear_error(strategy, budget, labeled, message):
    x, _ = three_clusters()
    with pytest.raises(UserError, match=message):
        run(strategy, x, budget, labeled=labeled)


def test_bad_values_are_refused():
    x, _ = three_clusters()
    x[3, 1] = np.nan
    with pytest.raises(UserError, match="NaN"):
        run("typiclust", x, 2)
    with pytest.raises(UserError, match="sum to 1 per row: pass softmax outputs, not logits"):
        run("margin", PROBABILITIES * 3, 1)
    with pytest.raises(UserError, match="strategy 'coreset' is not valid: use one of random, "):
        run_strategy("coreset", x, 1)


def test_whitening_undoes_any_linear_stretch_of_the_features():
    """Whitened to full rank, features are the same up to a rotation whatever invertible linear map
    stretched them (all cosines equal), so a strategy picks the same images; on the raw stretched
    features it does not (one axis 200x wider swamps the clusters)."""
    from lit_effdl.select.embed import whiten

    x, truth = three_clusters()
    stretch = np.diag([1.0, 1.0, 1.0, 200.0]) @ np.random.default_rng(3).normal(size=(4, 4))
    stretched = (x @ stretch).astype(np.float32)
    a, b = whiten(x, 4), whiten(stretched, 4)
    assert np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(a @ a.T, b @ b.T, atol=2e-3)  # float32 rows
    assert list(run("typiclust", a, 3).indices) == list(run("typiclust", b, 3).indices)
    assert list(run("typiclust", x, 3).indices) != list(run("typiclust", stretched, 3).indices)
    assert whiten(x, 99).shape == x.shape  # at most the data's dimensions
    with pytest.raises(UserError, match="whiten_dims=0 is not valid"):
        whiten(x, 0)
