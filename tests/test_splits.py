import numpy as np
import pytest

from lit_effdl.data.splits import label_budget_split, stratified_take
from lit_effdl.errors import UserError

TARGETS = np.repeat(np.arange(5), [30, 25, 40, 22, 33])


def test_counts_exact_per_class():
    split = label_budget_split(TARGETS, num_labels_per_class=4, val_fraction=0.1, seed=3)
    assert np.bincount(TARGETS[split.labeled], minlength=5).tolist() == [4] * 5


def test_parts_are_disjoint_and_cover_train():
    split = label_budget_split(TARGETS, num_labels_per_class=4, val_fraction=0.1, seed=3)
    parts = [set(split.labeled.tolist()), set(split.unlabeled.tolist()), set(split.val.tolist())]
    assert all(not (a & b) for i, a in enumerate(parts) for b in parts[i + 1 :])
    assert set().union(*parts) == set(range(len(TARGETS)))
    # validation is stratified too: every class is present
    assert set(TARGETS[split.val].tolist()) == set(range(5))


def test_same_seed_same_split_other_seed_other_split():
    a = label_budget_split(TARGETS, num_labels_per_class=3, seed=0)
    b = label_budget_split(TARGETS, num_labels_per_class=3, seed=0)
    c = label_budget_split(TARGETS, num_labels_per_class=3, seed=1)
    assert a.fingerprint() == b.fingerprint()
    assert np.array_equal(a.labeled, b.labeled)
    assert not np.array_equal(a.labeled, c.labeled)


def test_total_budget_spreads_evenly():
    split = label_budget_split(TARGETS, num_labels=12, val_fraction=0.0, seed=0)
    counts = np.bincount(TARGETS[split.labeled], minlength=5)
    assert counts.sum() == 12 and counts.max() - counts.min() <= 1


def test_all_labels_when_no_budget():
    split = label_budget_split(TARGETS, val_fraction=0.2)
    assert len(split.unlabeled) == 0
    assert len(split.labeled) + len(split.val) == len(TARGETS)


def test_budget_larger_than_smallest_class_is_refused():
    with pytest.raises(UserError, match=r"num_labels_per_class=30 .*smallest class has 22"):
        stratified_take(TARGETS, per_class=30)


def test_both_budgets_refused():
    with pytest.raises(UserError, match="not both"):
        label_budget_split(TARGETS, num_labels_per_class=2, num_labels=10)
