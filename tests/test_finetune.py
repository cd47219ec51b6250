"""Finetune: frozen probe stays bitwise frozen, per-group LRs, LP-FT (the head first, then everything), bad input."""

import os
import subprocess
import sys
import textwrap

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor
from lightning.pytorch.loggers import TensorBoardLogger

from lit_effdl.callbacks import GradualUnfreeze
from lit_effdl.data import SyntheticDataModule
from lit_effdl.errors import UserError
from lit_effdl.methods import Finetune, Supervised


def _dm(**kwargs):
    return SyntheticDataModule(num_classes=4, image_size=16, num_train=96, batch_size=16, **kwargs)


def _fit(model, dm, kwargs, epochs=2, **extra):
    trainer = L.Trainer(max_epochs=epochs, limit_val_batches=1, **{**kwargs, **extra})
    trainer.fit(model, dm)
    return trainer


def _snapshot(model: Finetune) -> dict[str, torch.Tensor]:
    head = {id(p) for h in model.heads for p in h.parameters()}
    return {
        name: t.detach().clone()
        for name, t in list(model.backbone.named_parameters()) + list(model.backbone.named_buffers())
        if id(t) not in head
    }


class _NormModeProbe(Callback):
    """Records whether any backbone BatchNorm was in training mode during a training step."""

    def __init__(self):
        self.seen_training = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen_training.append(any(m.training for m in pl_module.body_norms()))


def test_linear_probe_leaves_backbone_and_bn_stats_bitwise_unchanged(fast_trainer_kwargs):
    model = Finetune(mode="linear_probe", backbone="small_cnn_w8", num_classes=4, lr=0.1)
    before = _snapshot(model)
    head_before = model.heads[0].weight.detach().clone()
    probe = _NormModeProbe()
    _fit(model, _dm(), fast_trainer_kwargs, epochs=3, callbacks=[probe])  # validation runs between epochs
    after = _snapshot(model)
    assert before.keys() == after.keys() and any("running_mean" in k for k in before)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == [], f"backbone tensors changed in linear_probe: {changed}"
    assert not torch.equal(head_before, model.heads[0].weight), "the head did not train"
    assert probe.seen_training and not any(probe.seen_training)
    # frozen backbone parameters are not in the optimizer
    opt_params = {id(p) for g in model.trainer.optimizers[0].param_groups for p in g["params"]}
    assert not opt_params & {id(p) for p in model.body_parameters()}


def test_full_mode_optimizer_groups_and_tensorboard_lr_curves(tmp_path, fast_trainer_kwargs):
    model = Finetune(mode="full", probe_epochs=0, backbone="small_cnn_w8", num_classes=4, lr=0.1, head_lr=0.1,
                     backbone_lr=0.001, scheduler="constant", weight_decay=1e-3)
    kwargs = {**fast_trainer_kwargs, "logger": TensorBoardLogger(str(tmp_path), name="tb")}
    trainer = _fit(model, _dm(), kwargs, epochs=1, callbacks=[LearningRateMonitor("step")], log_every_n_steps=1)
    groups = {g["name"]: g for g in trainer.optimizers[0].param_groups}
    assert {"backbone", "backbone_no_decay", "head", "head_no_decay"} <= groups.keys()
    assert groups["backbone"]["lr"] == 0.001 and groups["head"]["lr"] == 0.1
    assert groups["backbone_no_decay"]["weight_decay"] == 0.0 and groups["backbone"]["weight_decay"] == 1e-3
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(trainer.logger.log_dir)
    events.Reload()
    tags = events.Tags()["scalars"]
    for name in ("backbone", "head"):
        tag = next(t for t in tags if t.startswith("lr-") and t.endswith(f"/{name}"))
        assert events.Scalars(tag)[-1].value == pytest.approx(groups[name]["lr"])


def test_full_is_lp_ft_by_default_the_head_alone_then_everything(fast_trainer_kwargs):
    model = Finetune(backbone="small_cnn_w8", num_classes=4, lr=0.1, backbone_lr=0.01, scheduler="constant")
    before, head_before = _snapshot(model), model.heads[0].weight.detach().clone()
    seen, norms = {}, _NormModeProbe()

    class Watch(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            lr = {g["name"]: g["lr"] for g in trainer.optimizers[0].param_groups}["backbone"]
            seen.setdefault(trainer.current_epoch, []).append(lr)

        def on_train_epoch_end(self, trainer, pl_module):
            seen[trainer.current_epoch] = (pl_module.body_frozen, max(seen[trainer.current_epoch]), _snapshot(pl_module),
                                           pl_module.heads[0].weight.detach().clone())

    trainer = _fit(model, _dm(), fast_trainer_kwargs, epochs=2, callbacks=[Watch(), norms])
    assert model.hparams.mode == "full" and model.hparams.probe_epochs == 1
    assert any(isinstance(c, GradualUnfreeze) for c in trainer.callbacks)  # Lightning's BaseFinetuning
    groups = {g["name"]: g for g in trainer.optimizers[0].param_groups}
    assert groups["backbone"]["weight_decay"] > 0 and groups["backbone_no_decay"]["weight_decay"] == 0.0
    frozen0, lr0, snap0, head0 = seen[0]
    frozen1, lr1, snap1, _ = seen[1]
    # the probe epoch: the head trains on a backbone held bitwise, BatchNorm statistics included
    assert frozen0 and lr0 == 0.0 and all(torch.equal(before[k], snap0[k]) for k in before)
    assert not torch.equal(head_before, head0), "the head did not train in the probe epoch"
    steps = len(norms.seen_training) // 2
    assert not any(norms.seen_training[:steps]) and all(norms.seen_training[steps:])
    # then everything trains, the backbone at its own LR
    assert not frozen1 and lr1 > 0 and any(not torch.equal(before[k], snap1[k]) for k in before if "weight" in k)


DDP_LP_FT = textwrap.dedent("""
    import sys, torch, lightning as L
    from lit_effdl.data import SyntheticDataModule
    from lit_effdl.methods import Finetune

    class Body(L.Callback):  # the body (no head) at each epoch's end, BatchNorm statistics included
        snaps = {}
        def on_train_epoch_end(self, trainer, m):
            self.snaps[trainer.current_epoch] = {k: v.clone() for k, v in m.backbone.state_dict().items() if "fc." not in k}

    if __name__ == "__main__":
        torch.set_num_threads(1)
        L.seed_everything(0)
        model = Finetune(backbone="small_cnn_w8", num_classes=4, lr=0.1, backbone_lr=0.01)
        before = {k: v.clone() for k, v in model.backbone.state_dict().items() if "fc." not in k}
        trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=2, logger=False, callbacks=[Body()],
                            enable_checkpointing=False, enable_progress_bar=False, limit_val_batches=1)
        trainer.fit(model, SyntheticDataModule(num_classes=4, image_size=16, num_train=96, batch_size=8))
        torch.save({"before": before, **Body.snaps}, f"{sys.argv[1]}.rank{trainer.global_rank}")
""")


def test_lp_ft_under_two_process_ddp_holds_then_trains_the_body_alike_on_both_ranks(tmp_path):
    """Under DDP the body is not frozen (DDP syncs only what needed gradients at wrap time): LR 0 and
    BatchNorm in eval hold it in the probe epoch; then it trains, identically on both ranks."""
    (tmp_path / "lp_ft.py").write_text(DDP_LP_FT)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, str(tmp_path / "lp_ft.py"), str(tmp_path / "out")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"out.rank{r}", weights_only=True) for r in (0, 1)]
    for rank in ranks:
        assert all(torch.equal(rank["before"][k], v) for k, v in rank[0].items()), "the probe epoch moved the body"
        assert all(not torch.equal(rank["before"][k], rank[1][k]) for k in rank[1] if k.endswith("weight"))
    assert all(torch.equal(v, ranks[1][1][k]) for k, v in ranks[0][1].items())


def test_lp_ft_unfreezes_in_a_run_set_by_max_steps(fast_trainer_kwargs):
    model = Finetune(mode="full", backbone="small_cnn_w8", num_classes=4, lr=0.1, backbone_lr=0.01,
                     probe_epochs=1, scheduler="constant")
    lrs = {}

    class Watch(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            lr = {g["name"]: g["lr"] for g in trainer.optimizers[0].param_groups}["backbone"]
            lrs.setdefault(trainer.current_epoch, []).append(lr)

    trainer = _fit(model, _dm(), fast_trainer_kwargs, epochs=-1, max_steps=12, callbacks=[Watch()])
    assert trainer.num_training_batches < 12 and len(lrs) >= 2
    assert max(lrs[0]) == 0.0 and max(lrs[1]) > 0.0  # the backbone's LR starts in epoch 1, not after the run


def test_layer_decay_groups_scale_head_lr():
    model = Finetune(mode="full", backbone="resnet10t", num_classes=4, lr=0.1, layer_decay=0.5)
    groups = model.param_groups()
    lrs = [g["lr"] for g in groups]
    assert max(lrs) == pytest.approx(0.1) and min(lrs) < 0.1 / 4
    assert len({g["name"] for g in groups}) == len(groups)
    assert sum(len(g["params"]) for g in groups) == len(list(model.backbone.parameters()))


def test_checkpoint_of_a_supervised_run_loads_with_a_new_head(tmp_path, fast_trainer_kwargs):
    source = Supervised(backbone="small_cnn_w8", num_classes=4)
    trainer = _fit(source, _dm(), fast_trainer_kwargs, epochs=1)
    ckpt = tmp_path / "source.ckpt"
    trainer.save_checkpoint(ckpt)
    model = Finetune(mode="linear_probe", backbone="small_cnn_w8", num_classes=3, checkpoint_path=str(ckpt))
    src = source.backbone.state_dict()
    for key, value in model.backbone.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(value, src[key]), key
    assert model.heads[0].out_features == 3 and model.load_report.dropped_classifier
    # same class count: the classifier is still replaced by a fresh one
    same = Finetune(mode="full", backbone="small_cnn_w8", num_classes=4, checkpoint_path=str(ckpt))
    assert not torch.equal(same.backbone.fc.weight, source.backbone.fc.weight)


def test_cached_features_match_the_live_forward_and_keep_backbone_frozen(fast_trainer_kwargs):
    dm = _dm(labeled_augment="none")
    model = Finetune(mode="linear_probe", backbone="small_cnn_w8", num_classes=4, lr=0.1, cache_features=True)
    before = _snapshot(model)
    _fit(model, dm, fast_trainer_kwargs, epochs=2)
    assert model._feature_cache is not None and model._feature_cache.shape[0] == len(dm.labeled_source)
    batch = next(iter(torch.utils.data.DataLoader(dm.labeled_dataset(), batch_size=8)))
    model.eval()
    with torch.no_grad():
        live = model(batch["image"])
        cached = model.heads[0](model._feature_cache[batch["index"]])
    assert torch.allclose(live, cached, atol=1e-5)
    assert all(torch.equal(before[k], v) for k, v in _snapshot(model).items())


def test_augment_on_device_leaves_the_data_module_alone(fast_trainer_kwargs):
    model = Finetune(mode="full", backbone="small_cnn_w8", num_classes=4, lr=0.1)
    dm = _dm(labeled_augment="weak", augment_on="device")
    dm.setup("fit")
    specs = dm.train_specs()
    _fit(model, dm, fast_trainer_kwargs, epochs=1)
    assert dm.train_specs() == specs and not hasattr(model, "augment_batch")


def test_cache_features_refuses_a_random_pipeline(fast_trainer_kwargs):
    model = Finetune(mode="linear_probe", backbone="small_cnn_w8", num_classes=4, cache_features=True)
    with pytest.raises(UserError, match="deterministic"):
        _fit(model, _dm(labeled_augment="weak"), fast_trainer_kwargs, epochs=1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mode": "linear_probe", "backbone_lr": 0.01}, "backbone_lr"),
        ({"checkpoint_path": "/nonexistent/weights.pt"}, "not a file"),
        ({"mode": "full", "cache_features": True}, "linear_probe"),
        ({"mode": "sideways"}, "mode='sideways'"),
        ({"mode": "gradual"}, "'full' with probe_epochs"),
        ({"probe_epochs": -1}, "probe_epochs=-1"),
    ],
)
def test_bad_input_gives_one_clear_message(kwargs, match):
    with pytest.raises(UserError, match=match):
        Finetune(backbone="small_cnn_w8", num_classes=4, **kwargs)


def test_checkpoint_of_another_architecture_is_refused_by_name(tmp_path):
    torch.save(Supervised(backbone="small_cnn_w8", num_classes=4).backbone.state_dict(), tmp_path / "w.pt")
    with pytest.raises(UserError, match="do not match.*(missing|unexpected|wrong shape)"):
        Finetune(backbone="small_cnn_w16", num_classes=4, checkpoint_path=str(tmp_path / "w.pt"))


def test_head_classes_must_agree_with_the_data(fast_trainer_kwargs):
    model = Finetune(mode="linear_probe", backbone="small_cnn_w8", num_classes=3)
    with pytest.raises(UserError, match="num_classes=3 disagrees.*4 classes"):
        _fit(model, _dm(), fast_trainer_kwargs, epochs=1)
