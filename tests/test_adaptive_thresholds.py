"""FlexMatch and FreeMatch: thresholds, masks and losses by hand; state in checkpoints; 2 DDP
processes hold the state of 1; bad input."""

import math
import textwrap

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from lit_effdl.data import SyntheticDataModule
from lit_effdl.errors import UserError
from lit_effdl.losses import fairness_loss
from lit_effdl.methods import FlexMatch, FreeMatch

from ddp_script import single_and_ranks

# four weak-view predictions over C = 3 classes, given as probabilities (logits = their logs)
WEAK = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3], [0.9, 0.05, 0.05]])


def _logits(probs):
    return torch.tensor(probs).log() if isinstance(probs, list) else probs.log()


# ---------------------------------------------------------------------------------------- FlexMatch
def test_flexmatch_class_thresholds_by_hand():
    model = FlexMatch(num_classes=3, threshold=0.8)
    model.selected_label = torch.tensor([0, 0, 0, 0, 1, 1, 2, -1, -1, -1])
    # sigma = (4, 2, 1), 3 unused: beta = sigma / max(4, 3) = (1, 1/2, 1/4); M(x) = x / (2 - x)
    expected = [0.8 * 1.0, 0.8 * (0.5 / 1.5), 0.8 * (0.25 / 1.75)]
    assert model.class_thresholds().tolist() == pytest.approx(expected, rel=1e-6)

    model.selected_label = torch.tensor([0, 0, 1, 2, -1, -1, -1, -1, -1, -1])
    # sigma = (2, 1, 1), 6 unused > 2: warm-up divides by 6 -> beta = (1/3, 1/6, 1/6)
    warm = [0.8 * (1 / 3) / (2 - 1 / 3), 0.8 * (1 / 6) / (2 - 1 / 6), 0.8 * (1 / 6) / (2 - 1 / 6)]
    assert model.class_thresholds().tolist() == pytest.approx(warm, rel=1e-6)
    model.hparams.threshold_warmup = False  # divides by the largest class count, 2 -> beta = (1, 1/2, 1/2)
    assert model.class_thresholds().tolist() == pytest.approx([0.8, 0.8 / 3, 0.8 / 3], rel=1e-6)


def test_flexmatch_mask_loss_and_memory_by_hand():
    model = FlexMatch(num_classes=3, threshold=0.8, lambda_u=2.0)
    model.selected_label = torch.tensor([0, 0, 0, 0, 1, 1, 2, -1, -1, -1])  # thresholds (0.8, 4/15, 4/35)
    index = torch.tensor([7, 8, 2, 5])
    strong = _logits([[1.0, 1.0, 1.0], [0.25, 0.25, 0.5], [0.2, 0.6, 0.2], [0.7, 0.2, 0.1]])
    loss, mask, pseudo = model.unlabeled_loss(_logits(WEAK), strong, index)
    # row 0: class 0 at 0.5 < 0.8 dropped; row 1: class 2 at 0.6 >= 4/35; row 2: class 1 at 0.5 >= 4/15;
    # row 3: class 0 at 0.9 >= 0.8
    assert mask.tolist() == [0.0, 1.0, 1.0, 1.0] and pseudo.tolist() == [0, 2, 1, 0]
    expected = 2.0 * (-math.log(0.5) - math.log(0.6) - math.log(0.7)) / 4  # lambda_u x mean over all 4 rows
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # the memory takes only predictions >= 0.8: row 3 turns image 5 from class 1 to class 0
    assert model.selected_label.tolist() == [0, 0, 0, 0, 1, 0, 2, -1, -1, -1]
    # next status: sigma = (5, 1, 1), 3 unused: beta = (1, 1/5, 1/5)
    assert model.class_thresholds().tolist() == pytest.approx([0.8, 0.8 / 9, 0.8 / 9], rel=1e-6)


# ---------------------------------------------------------------------------------------- FreeMatch
def _freematch_in_state(**kwargs):
    model = FreeMatch(num_classes=3, ema_momentum=0.5, **kwargs)
    model.tau.fill_(0.5)
    model.class_probs.copy_(torch.tensor([0.5, 0.3, 0.2]))
    model.label_hist.copy_(torch.tensor([0.5, 0.25, 0.25]))
    return model


def test_freematch_state_thresholds_and_mask_by_hand():
    model = _freematch_in_state()
    mask, pseudo = model.pseudo_label_mask(_logits(WEAK), torch.arange(4))
    # tau = 0.5 x 0.5 + 0.5 x mean(0.5, 0.6, 0.5, 0.9); p = 0.5 p + 0.5 x column means (1.7, 1.15, 1.15) / 4;
    # h = 0.5 h + 0.5 x histogram of argmax (0, 2, 1, 0) = (2, 1, 1) / 4
    tau = 0.25 + 0.5 * 2.5 / 4  # 0.5625
    probs = [0.25 + 0.5 * 1.7 / 4, 0.15 + 0.5 * 1.15 / 4, 0.1 + 0.5 * 1.15 / 4]  # (0.4625, 0.29375, 0.24375)
    assert model.tau.item() == pytest.approx(tau, rel=1e-6)
    assert model.class_probs.tolist() == pytest.approx(probs, rel=1e-6)
    assert model.label_hist.tolist() == pytest.approx([0.5, 0.25, 0.25], rel=1e-6)
    thresholds = [tau, tau * 0.29375 / 0.4625, tau * 0.24375 / 0.4625]  # (0.5625, 0.3573, 0.2965)
    assert model.class_thresholds().tolist() == pytest.approx(thresholds, rel=1e-6)
    assert mask.tolist() == [0.0, 1.0, 1.0, 1.0]  # row 0: class 0 at 0.5 < 0.5625
    assert pseudo.tolist() == [0, 2, 1, 0]


def test_freematch_loss_with_fairness_term_by_hand():
    model = _freematch_in_state(lambda_f=0.5)
    strong = _logits([[0.2, 0.2, 0.6], [0.2, 0.2, 0.6], [0.6, 0.2, 0.2], [0.7, 0.2, 0.1]])
    loss, mask, _ = model.unlabeled_loss(_logits(WEAK), strong, torch.arange(4))
    assert mask.tolist() == [0.0, 1.0, 1.0, 1.0]
    ce = (-math.log(0.6) - math.log(0.2) - math.log(0.7)) / 4  # pseudo-labels 2, 1, 0 on rows 1-3
    # kept strong rows: mean prob (1.5, 0.6, 0.9) / 3 = (0.5, 0.2, 0.3), argmax histogram (2, 0, 1) / 3;
    # p_bar / h_bar = (0.75, 0 (1/0 -> 0), 0.9) -> (5/11, 0, 6/11)
    # p_t / h_t = (0.4625 / 0.5, 0.29375 / 0.25, 0.24375 / 0.25) = (0.925, 1.175, 0.975), sum 3.075
    target = [0.925 / 3.075, 1.175 / 3.075, 0.975 / 3.075]
    pred = [5 / 11, 0.0, 6 / 11]
    fair = sum(t * math.log(p + 1e-12) for t, p in zip(target, pred))  # about -10.99
    assert loss.item() == pytest.approx(ce + 0.5 * fair, rel=1e-5)


def test_fairness_loss_is_zero_with_finite_gradient_when_nothing_is_kept():
    logits = torch.randn(4, 3, requires_grad=True)
    loss = fairness_loss(logits, torch.zeros(4), torch.full((3,), 1 / 3), torch.full((3,), 1 / 3))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros(4, 3))


# ---------------------------------------------------------------------------------------- checkpoints
STATE = {FlexMatch: ["selected_label"], FreeMatch: ["tau", "class_probs", "label_hist"]}


class KeepStateAtStart(L.Callback):
    def on_train_start(self, trainer, pl_module):
        self.state = {name: getattr(pl_module, name).clone() for name in STATE[type(pl_module)]}


@pytest.mark.parametrize("method", [FlexMatch, FreeMatch])
def test_state_survives_checkpoint_save_load_and_resume(tmp_path, fast_trainer_kwargs, method):
    dm = SyntheticDataModule(num_classes=4, image_size=16, channels=3, num_train=80, num_test=8,
                             num_labels_per_class=4, batch_size=4, unlabeled_ratio=2, labeled_samples_per_epoch=16)
    L.seed_everything(0)
    kwargs = {"threshold": 0.3} if method is FlexMatch else {"ema_momentum": 0.5}
    model = method(num_classes=4, in_chans=3, backbone="small_cnn_w8", **kwargs)
    fast = {**fast_trainer_kwargs, "limit_val_batches": 0}
    trainer = L.Trainer(max_steps=2, **fast)
    trainer.fit(model, datamodule=dm)
    state = {name: getattr(model, name).clone() for name in STATE[method]}
    if method is FlexMatch:
        pool = len(dm.unlabeled_inference_dataset())
        assert state["selected_label"].numel() == pool and (state["selected_label"] >= 0).sum() > 0
    else:
        assert state["tau"].item() != 0.25
    path = tmp_path / "state.ckpt"
    trainer.save_checkpoint(path)

    loaded = method.load_from_checkpoint(path, weights_only=True)
    for name, value in state.items():
        assert torch.equal(getattr(loaded, name), value), name

    keep = KeepStateAtStart()  # resume: setup() must not reset what the checkpoint restores
    L.Trainer(max_steps=3, callbacks=[keep], **fast).fit(method(num_classes=4, in_chans=3, backbone="small_cnn_w8",
                                                                **kwargs), datamodule=dm, ckpt_path=path)
    for name, value in state.items():
        assert torch.equal(keep.state[name], value), name


# ---------------------------------------------------------------------------------------- DDP
DDP_SCRIPT = textwrap.dedent("""
    import sys
    import torch
    import lightning as L

    from lit_effdl.losses import hard_pseudo_labels
    from lit_effdl.methods import FlexMatch, FreeMatch

    def batches():  # 3 global batches of 8 weak-view logits over 3 classes, from a pool of 12 images
        g = torch.Generator().manual_seed(0)
        out = []
        for step in range(3):
            index = torch.randperm(12, generator=g)[:8]
            if step == 1:
                index[5] = index[1]  # one image on both ranks (DistributedSampler padding)
            out.append((3 * torch.randn(8, 3, generator=g), index))
        return out

    def run(rows):
        torch.manual_seed(0)
        flex = FlexMatch(num_classes=3, threshold=0.6, backbone="small_cnn_w8")
        free = FreeMatch(num_classes=3, ema_momentum=0.7, backbone="small_cnn_w8")
        flex.selected_label = torch.full((12,), -1)
        return flex, free, rows

    def steps(flex, free, rows):
        thresholds = []
        for logits, index in batches():
            logits, index = logits[rows], index[rows]
            thresholds.append(flex.class_thresholds())
            confidence, pseudo = hard_pseudo_labels(logits)
            flex.remember(confidence, pseudo, index)
            free.update_state(logits.softmax(-1))
            thresholds.append(free.class_thresholds())
        return {"thresholds": torch.stack(thresholds), "selected_label": flex.selected_label, "tau": free.tau,
                "class_probs": free.class_probs, "label_hist": free.label_hist}

    def worker(fabric, out):
        flex, free, rows = run(slice(4 * fabric.global_rank, 4 * fabric.global_rank + 4))
        fabric.setup_module(flex), fabric.setup_module(free)  # attaches Fabric: all_gather, world_size
        result = steps(flex, free, rows)
        torch.save(result, f"{out}.rank{fabric.global_rank}")

    if __name__ == "__main__":
        out = sys.argv[1]
        torch.set_num_threads(1)
        torch.save(steps(*run(slice(0, 8))), f"{out}.single")
        fabric = L.Fabric(accelerator="cpu", devices=2, strategy="ddp_fork")  # forked: no re-import
        fabric.launch(worker, out)
""")


def test_two_ddp_processes_hold_the_state_of_one(tmp_path):
    single, ranks = single_and_ranks(tmp_path, DDP_SCRIPT)
    assert (single["selected_label"] >= 0).sum() > 0 and single["tau"].item() != 1 / 3  # the state moved
    for rank, ddp in enumerate(ranks):  # every rank holds the state one process has after the same global batches
        for name, value in single.items():
            assert torch.allclose(ddp[name], value, rtol=1e-6, atol=1e-7), (rank, name)


# ---------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.5])
def test_flexmatch_bad_threshold_is_refused(threshold):
    with pytest.raises(UserError, match=rf"threshold={threshold} is not valid: use a confidence in \(0, 1\]"):
        FlexMatch(num_classes=3, threshold=threshold)


@pytest.mark.parametrize("momentum", [1.0, -0.1, 1.5])
def test_freematch_bad_momentum_is_refused(momentum):
    with pytest.raises(UserError, match=rf"ema_momentum={momentum} is not valid: use a value in \[0, 1\)"):
        FreeMatch(num_classes=3, ema_momentum=momentum)


def test_freematch_negative_fairness_weight_is_refused():
    with pytest.raises(UserError, match="lambda_f=-1.0 is not valid"):
        FreeMatch(num_classes=3, lambda_f=-1.0)


@pytest.mark.parametrize("data", ["fully_labeled", "plain_loader"])
def test_flexmatch_without_unlabeled_pool_is_refused_at_fit_start(fast_trainer_kwargs, data):
    dm = SyntheticDataModule(num_classes=4, image_size=16, num_train=64, unlabeled_ratio=2)  # every image labeled
    model = FlexMatch(num_classes=4, in_chans=3, backbone="small_cnn_w8")
    trainer = L.Trainer(max_steps=1, **fast_trainer_kwargs)
    with pytest.raises(UserError, match="FlexMatch needs an unlabeled pool"):
        if data == "fully_labeled":
            trainer.fit(model, datamodule=dm)
        else:
            dm.setup("fit")
            trainer.fit(model, train_dataloaders=DataLoader(dm.labeled_dataset(), batch_size=4))
