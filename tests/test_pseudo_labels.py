"""Shared pseudo-labeling: inference by index, filtering, class balancing, atomic files, teacher check."""

import pytest
import torch
from torch import nn

from lit_effdl.errors import UserError
from lit_effdl.pseudo_labels import (
    balance_classes,
    filter_confident,
    load_pseudo_labels,
    make_pseudo_labels,
    model_fingerprint,
    predict_probs,
    save_pseudo_labels,
    unique_by_index,
)


class Items(torch.utils.data.Dataset):
    def __init__(self, n: int):
        self.x = torch.randn(n, 5, generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"image": self.x[i], "index": i}


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 3), nn.Dropout(0.9))


def test_predict_probs_is_ordered_by_index_and_un_noised():
    net, data = _net(), Items(11)
    net.train()
    out = predict_probs(net, data, batch_size=4)
    assert torch.equal(out["index"], torch.arange(11))
    expected = net[0](data.x).softmax(-1)  # dropout off: eval mode during the pass
    assert torch.allclose(out["probs"], expected, atol=1e-6)
    assert net.training  # mode restored
    logits = predict_probs(net, data, batch_size=4, temperature=2.0, output="logits")["logits"]
    assert torch.allclose(logits, net[0](data.x) / 2.0, atol=1e-6)


def test_unique_by_index_sorts_and_drops_padded_repeats():
    """A distributed sampler pads shards with repeats of the first samples: each index is kept once."""
    index = torch.tensor([2, 0, 4, 1, 3, 0])
    values = torch.tensor([[2.0], [0.0], [4.0], [1.0], [3.0], [0.5]])
    index, values = unique_by_index(index, values)
    assert index.tolist() == [0, 1, 2, 3, 4] and values.flatten().tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_empty_unlabeled_set_is_refused():
    with pytest.raises(UserError, match="empty"):
        predict_probs(_net(), Items(0))


def test_filter_and_balance():
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.95, 0.05], [0.55, 0.45]])
    assert filter_confident(probs, 0.7).tolist() == [0, 2, 3]
    labels, conf = probs.argmax(-1), probs.max(-1).values
    chosen = balance_classes(labels, conf, per_class=3, num_classes=2)
    # class 0 (4 images) truncated to its 3 most confident; class 1 (1 image) duplicated 3 times
    assert sorted(chosen[labels[chosen] == 0].tolist()) == [0, 1, 3]
    assert chosen[labels[chosen] == 1].tolist() == [2, 2, 2]


def test_make_pseudo_labels_soft_hard_and_weights():
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.95, 0.05]])
    preds = {"index": torch.arange(4), "probs": probs}
    hard = make_pseudo_labels(preds, "t", min_confidence=0.7)
    assert hard.index.tolist() == [0, 2, 3] and hard.targets.tolist() == [0, 1, 0]
    assert hard.weights().tolist() == [1.0, 0.0, 1.0, 1.0]
    soft = make_pseudo_labels(preds, "t", min_confidence=0.7, soft=True, per_class=0)
    assert soft.targets.ndim == 2
    counts = torch.bincount(soft.hard_labels, minlength=2)
    assert counts[0] == counts[1]  # balanced to the mean kept count (3 kept / 2 classes -> 2)
    assert soft.dense_targets(2)[1].sum() == 0  # the filtered image has no target


def test_save_load_round_trip_is_atomic_and_checks_the_teacher(tmp_path):
    net = _net()
    fingerprint = model_fingerprint(net)
    preds = predict_probs(net, Items(6))
    labels = make_pseudo_labels(preds, fingerprint, min_confidence=0.0, soft=True)
    path = tmp_path / "round_1" / "pseudo_labels.pt"
    save_pseudo_labels(path, labels)
    assert [p.name for p in path.parent.iterdir()] == ["pseudo_labels.pt"]  # no temp file left
    loaded = load_pseudo_labels(path, fingerprint, num_unlabeled=6)
    assert torch.equal(loaded.targets, labels.targets) and torch.equal(loaded.index, labels.index)
    other = _net()
    with torch.no_grad():
        other[0].weight.add_(0.01)
    with pytest.raises(UserError, match="made by teacher"):
        load_pseudo_labels(path, model_fingerprint(other))
    with pytest.raises(UserError, match="covers 6 unlabeled images"):
        load_pseudo_labels(path, fingerprint, num_unlabeled=7)
