"""The label budget as pure functions on a label array: seeded index arrays, chosen stratified by
class (the benchmark convention), at random blind to class, or given by a selection file."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np

from lit_effdl.errors import UserError

LABEL_SELECTIONS = ("stratified", "random", "file")


@dataclass(frozen=True)
class BudgetSplit:
    """Indices into the train split: labeled, unlabeled (labels hidden) and validation."""

    labeled: np.ndarray
    unlabeled: np.ndarray
    val: np.ndarray

    def to_dict(self) -> dict[str, list[int]]:
        return {k: np.asarray(v).tolist() for k, v in asdict(self).items()}

    def fingerprint(self) -> str:
        """Short hash of the three index lists: two runs with the same hash saw the same labels."""
        payload = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()[:16]


def class_counts(targets: np.ndarray) -> dict[int, int]:
    values, counts = np.unique(targets, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts)}


def stratified_take(
    targets: np.ndarray,
    per_class: int | None = None,
    total: int | None = None,
    fraction: float | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Split positions ``0..len(targets)-1`` into (taken, rest), stratified by class.

    Exactly one of ``per_class`` (that many of each class), ``total`` (spread as evenly as the
    classes allow, remainder to the first classes in a seeded order) or ``fraction`` (of each
    class, rounded, at least one) must be given. Both outputs are sorted.
    """
    targets = np.asarray(targets)
    if sum(x is not None for x in (per_class, total, fraction)) != 1:
        raise ValueError("give exactly one of per_class, total, fraction")
    rng = np.random.default_rng(seed)
    classes = np.unique(targets)
    counts = class_counts(targets)
    smallest = min(counts.values())
    if per_class is not None:
        if per_class < 1 or per_class > smallest:
            raise UserError(
                f"num_labels_per_class={per_class} is not valid: the smallest class has "
                f"{smallest} training images; use 1..{smallest}"
            )
        quota = {int(c): per_class for c in classes}
    elif total is not None:
        if total < len(classes) or total > len(targets):
            raise UserError(
                f"num_labels={total} is not valid: use {len(classes)}..{len(targets)} "
                f"(at least one per class, at most the whole train split)"
            )
        base, extra = divmod(total, len(classes))
        order = rng.permutation(classes)
        quota = {int(c): base + (1 if i < extra else 0) for i, c in enumerate(order)}
        too_big = {c: q for c, q in quota.items() if q > counts[c]}
        if too_big:
            raise UserError(f"num_labels={total} needs {too_big} images of classes that have fewer")
    else:
        if not 0.0 < fraction < 1.0:
            raise UserError(f"fraction={fraction} is not valid: use a value in (0, 1)")
        quota = {c: max(1, int(round(n * fraction))) for c, n in counts.items()}
    taken = []
    for c in classes:
        members = np.flatnonzero(targets == c)
        taken.append(rng.permutation(members)[: quota[int(c)]])
    taken_idx = np.sort(np.concatenate(taken))
    rest = np.setdiff1d(np.arange(len(targets)), taken_idx)
    return taken_idx, rest


def check_label_selection(selection: str, per_class: int | None, total: int | None, has_file: bool) -> None:
    """The budget settings ``selection`` (``stratified``, ``random`` or ``file``) can use."""
    if selection not in LABEL_SELECTIONS:
        raise UserError(f"label_selection='{selection}' is not valid: use {', '.join(LABEL_SELECTIONS)}")
    if has_file != (selection == "file"):
        raise UserError("label_selection: file needs label_selection_file (a selection.csv)" if not has_file else
                        f"label_selection_file is given but label_selection='{selection}': "
                        "set label_selection: file")
    if selection == "stratified" and per_class is not None and total is not None:
        raise UserError(f"give num_labels_per_class ({per_class}) or num_labels ({total}), not both")
    if selection != "stratified" and per_class is not None:
        instead = "leave it unset (the file sets the budget)" if selection == "file" else "give num_labels"
        raise UserError(f"num_labels_per_class={per_class} is stratified by class, which label_selection="
                        f"'{selection}' is blind to: {instead}")
    if selection == "random" and total is None:
        raise UserError("label_selection: random needs num_labels, the number of images to label")


def random_take(count: int, total: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split positions ``0..count-1`` into (taken, rest): ``total`` drawn uniformly, blind to class."""
    if not 0 < total <= count:
        raise UserError(f"num_labels={total} is not valid: use 1..{count} (the train images outside validation)")
    taken = np.sort(np.random.default_rng(seed).choice(count, size=total, replace=False))
    return taken, np.setdiff1d(np.arange(count), taken)


def label_budget_split(
    targets: np.ndarray,
    num_labels_per_class: int | None = None,
    num_labels: int | None = None,
    val_fraction: float | None = 0.1,
    seed: int = 0,
    selection: str = "stratified",
    selected: np.ndarray | None = None,
) -> BudgetSplit:
    """Carve validation (if ``val_fraction``) then the labeled budget from a train label array.

    ``selection``: ``stratified`` (``num_labels_per_class`` of each class, or ``num_labels`` spread
    evenly; with neither every non-validation image is labeled and ``unlabeled`` is empty), ``random``
    (``num_labels`` drawn blind to class) or ``file`` (``selected``: positions into ``targets``, e.g.
    read from a ``selection.csv``; validation is the same stratified carve less the selected images,
    so it never holds a labeled one).
    """
    check_label_selection(selection, num_labels_per_class, num_labels, selected is not None)
    targets = np.asarray(targets)
    all_idx = np.arange(len(targets))
    if val_fraction:
        val_pos, pool = stratified_take(targets, fraction=val_fraction, seed=seed + 10_000)
        val = all_idx[val_pos]
    else:
        val, pool = np.array([], dtype=np.int64), all_idx
    if selection == "file":
        labeled = np.sort(np.asarray(selected, dtype=np.int64))
        if num_labels is not None and num_labels != len(labeled):
            raise UserError(f"num_labels={num_labels} but the selection file lists {len(labeled)} images: "
                            "leave num_labels unset or make them agree")
        if len(labeled) and (labeled.min() < 0 or labeled.max() >= len(targets)):
            raise UserError(f"selected positions must lie in 0..{len(targets) - 1}")
        val = np.setdiff1d(val, labeled)
        return BudgetSplit(labeled=labeled, unlabeled=np.setdiff1d(all_idx, np.union1d(labeled, val)), val=val)
    if num_labels_per_class is None and num_labels is None:
        return BudgetSplit(labeled=pool, unlabeled=np.array([], dtype=np.int64), val=val)
    if selection == "random":
        taken, rest = random_take(len(pool), num_labels, seed=seed)
    else:
        taken, rest = stratified_take(targets[pool], per_class=num_labels_per_class, total=num_labels, seed=seed)
    return BudgetSplit(labeled=pool[taken], unlabeled=pool[rest], val=val)
