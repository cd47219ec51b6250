"""SimCLR: NT-Xent by hand, the same loss and gradients under 2-process DDP, bad input, a short fit
logging the k-NN monitor, the k-NN and the SimCLR augmentation ops."""

import math
import textwrap

import lightning as L
import pytest
import torch

from ddp_script import single_and_ranks
from lit_effdl.augment import build_batched, build_pipeline
from lit_effdl.callbacks.knn import KNNMonitor, knn_predict, linear_probe_accuracy
from lit_effdl.data import SyntheticDataModule
from lit_effdl.errors import UserError
from lit_effdl.losses import nt_xent_loss
from lit_effdl.methods import SimCLR

NET = dict(backbone="small_cnn_w8", num_classes=4, in_chans=3, proj_hidden_dim=16, proj_output_dim=8)


def test_nt_xent_equals_explicit_loops():
    z = torch.tensor([[1.0, 0.0, 0.5], [0.2, 1.0, 0.0], [0.0, -1.0, 1.0],  # view 1 of images 0, 1, 2
                      [0.9, 0.1, 0.4], [0.0, 1.0, 0.3], [0.3, -0.8, 1.2]])  # view 2 of images 0, 1, 2
    temperature = 0.5

    def cosine(a, b):
        return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

    rows, total = z.tolist(), 0.0
    for i in range(6):
        positive = (i + 3) % 6
        denominator = sum(math.exp(cosine(rows[i], rows[j]) / temperature) for j in range(6) if j != i)
        total += -math.log(math.exp(cosine(rows[i], rows[positive]) / temperature) / denominator)
    assert nt_xent_loss(z, temperature).item() == pytest.approx(total / 6, rel=1e-6)


def test_nt_xent_rows_of_a_larger_candidate_set():
    """This rank's rows inside every rank's candidates (at ``offset``) give that part of the full loss."""
    torch.manual_seed(0)
    left, right = torch.randn(4, 5), torch.randn(4, 5)  # 2 "ranks", 2 images each, [view 1; view 2]
    full = nt_xent_loss(torch.cat([left[:2], right[:2], left[2:], right[2:]]), 0.3)
    candidates = torch.cat([left, right])
    parts = nt_xent_loss(left, 0.3, candidates, 0) + nt_xent_loss(right, 0.3, candidates, 4)
    assert (parts / 2).item() == pytest.approx(full.item(), rel=1e-6)


DDP_SCRIPT = textwrap.dedent("""
    import os, socket, sys
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp
    from torch import nn

    from lit_effdl.losses import gather_with_grad, nt_xent_loss

    def setup():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 5)), torch.randn(2, 8, 6)  # 8 images, 2 views

    def step(net, view1, view2):
        z = net(torch.cat([view1, view2]))
        candidates, offset = gather_with_grad(z)
        loss = nt_xent_loss(z, 0.5, candidates, offset)
        loss.backward()
        return loss.detach()

    def grads(net):
        return {name: p.grad for name, p in net.named_parameters()}

    def worker(rank, world, port, out):
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        torch.set_num_threads(1)
        dist.init_process_group("gloo", rank=rank, world_size=world)
        net, views = setup()
        ddp = nn.parallel.DistributedDataParallel(net)  # averages the ranks' gradients, as in training
        mine = slice(4 * rank, 4 * rank + 4)  # this rank's half of the global batch
        loss = step(ddp, views[0, mine], views[1, mine])
        mean = loss.clone()
        dist.all_reduce(mean)
        torch.save({"loss": mean / world, "grads": grads(net)}, f"{out}.rank{rank}")
        del ddp  # its reducer, then a barrier: without them 1 run in ~20 aborted at exit (gloo teardown race)
        dist.barrier()
        dist.destroy_process_group()

    if __name__ == "__main__":
        out = sys.argv[1]
        torch.set_num_threads(1)
        net, views = setup()
        torch.save({"loss": step(net, views[0], views[1]), "grads": grads(net)}, f"{out}.single")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        mp.spawn(worker, args=(2, port, out), nprocs=2, join=True)
""")


def test_two_process_loss_and_gradients_equal_one_process(tmp_path):
    """The negatives come from both ranks and the gradients flow back through the gather: without
    either, the 2-process loss or gradients differ from one process on the same global batch."""
    single, ranks = single_and_ranks(tmp_path, DDP_SCRIPT)
    for ddp in ranks:
        assert ddp["loss"].item() == pytest.approx(single["loss"].item(), rel=1e-5)
        for name, grad in single["grads"].items():
            torch.testing.assert_close(ddp["grads"][name], grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("temperature", [0.0, -0.5])
def test_non_positive_temperature_is_refused(temperature):
    with pytest.raises(UserError, match=f"temperature={temperature} is not valid"):
        SimCLR(temperature=temperature, **NET)
    with pytest.raises(UserError, match="temperature"):
        nt_xent_loss(torch.randn(4, 3), temperature)


def test_a_batch_of_one_image_is_refused():
    with pytest.raises(UserError, match="at least 2 images"):
        nt_xent_loss(torch.randn(2, 3), 0.2)  # two views of one image: no negative
    model = SimCLR(**NET)
    batch = {"unlabeled": {"weak": torch.zeros(1, 3, 16, 16, dtype=torch.uint8),
                           "strong": torch.zeros(1, 3, 16, 16, dtype=torch.uint8)}}
    model.train()
    model.projector.eval()  # BatchNorm refuses one row before the loss could
    with pytest.raises(UserError, match="at least 2 images"):
        model.training_step(batch, 0)


def _data(**kwargs):
    args = dict(num_classes=4, image_size=16, channels=3, num_train=96, num_test=16, num_labels_per_class=4,
                batch_size=4, unlabeled_ratio=4, unlabeled_weak_augment="simclr", unlabeled_strong_augment="simclr",
                augment_on="device")
    return SyntheticDataModule(**{**args, **kwargs})


@pytest.mark.parametrize("data, message", [
    (dict(num_labels_per_class=None), "unlabeled pool is empty"),  # every train image labeled
    (dict(unlabeled_ratio=0), "unlabeled_ratio=0"),
])
def test_nothing_to_pretrain_on_is_refused(data, message, fast_trainer_kwargs):
    trainer = L.Trainer(max_epochs=1, **fast_trainer_kwargs)
    with pytest.raises(UserError, match=message):
        trainer.fit(SimCLR(**NET), datamodule=_data(**data))


def test_two_step_fit_logs_the_knn_monitor(fast_trainer_kwargs):
    model = SimCLR(lars=True, warmup_epochs=0.5, **NET)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=2, **fast_trainer_kwargs)
    before = model.backbone.features[0][0].weight.clone()
    trainer.fit(model, datamodule=_data())
    metrics = trainer.callback_metrics
    assert trainer.global_step == 2 and not torch.equal(before, model.backbone.features[0][0].weight)
    assert type(trainer.optimizers[0]).__name__ == "Lars"
    for name in ("val/knn_acc", "val/knn_acc_labeled", "val/linear_acc"):
        assert 0.0 <= float(metrics[name]) <= 1.0, name
    assert float(metrics["val/acc"]) == float(metrics["val/knn_acc_labeled"])  # what the checkpoint monitors
    assert torch.isfinite(metrics["train/loss"])
    assert not any(key.startswith("fc.") for key in model.backbone.state_dict())  # no classifier
    assert any(key.startswith("projector.") for key in model.state_dict())  # the head, outside the backbone


def test_knn_and_linear_probe_are_perfect_on_separable_features():
    torch.manual_seed(0)
    centres = torch.eye(4) * 10
    labels = torch.arange(40) % 4
    memory = centres[labels] + torch.randn(40, 4) * 0.1
    queries_labels = torch.arange(12) % 4
    queries = centres[queries_labels] + torch.randn(12, 4) * 0.1
    assert torch.equal(knn_predict(memory, labels, queries, num_classes=4, k=20), queries_labels)
    assert linear_probe_accuracy(memory, labels, queries, queries_labels) == 1.0


def test_knn_votes_are_temperature_weighted():
    """One near neighbour of class 1 outvotes two farther ones of class 0 at a low temperature, not in a
    plain majority (a high temperature)."""
    memory = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.6, -0.8]])
    labels = torch.tensor([1, 0, 0])
    query = torch.tensor([[1.0, 0.05]])
    assert knn_predict(memory, labels, query, num_classes=2, k=3, temperature=0.07).item() == 1
    assert knn_predict(memory, labels, query, num_classes=2, k=3, temperature=100.0).item() == 0


def test_knn_monitor_bad_arguments():
    with pytest.raises(UserError, match="k=0"):
        KNNMonitor(k=0)
    with pytest.raises(UserError, match="temperature=0"):
        KNNMonitor(temperature=0)


@pytest.mark.parametrize("channels", [1, 3])
def test_simclr_views_on_both_paths(channels):
    """The preset runs per image and batched, on grey and colour images; colour ops leave grey images'
    single channel and grayscale makes a colour image's channels equal."""
    images = torch.randint(0, 256, (6, channels, 16, 16), dtype=torch.uint8)
    per_image = build_pipeline("simclr", 16)(images[0])
    batched = build_batched("simclr")(images)
    assert per_image.shape == images[0].shape and batched.shape == images.shape and batched.dtype == torch.uint8
    if channels == 3:
        grey = build_batched("gray-p1")(images)
        assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])
    assert torch.equal(build_batched("jitter-p0+gray-p0+blur-p0")(images), images)  # not drawn: unchanged
