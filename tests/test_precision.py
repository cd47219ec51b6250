"""Mixed precision on the CPU: every method trains under bf16-mixed and fp16 (16-mixed) with float32
losses; the fp16 loss scaler's skipped steps, its checkpointed state, thresholds on fp16 logits, the EMA.

Lightning turns ``Trainer(accelerator="cpu", precision="16-mixed")`` into bf16-mixed (with a warning),
so the fp16 runs here hand the Trainer Lightning's own ``MixedPrecision("16-mixed", "cpu")`` plugin:
the code path ``precision="16-mixed"`` takes on a GPU (``torch.autocast`` to float16, a
``torch.amp.GradScaler`` scaling the loss and skipping steps whose gradients overflow), on the CPU.
"""

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.precision import MixedPrecision

from lit_effdl.callbacks.nonfinite import NonFiniteGuard
from lit_effdl.data import SyntheticDataModule
from lit_effdl.losses import confidence_masked_cross_entropy
from lit_effdl.methods import (
    Distill,
    Finetune,
    FixMatch,
    NoisyStudent,
    OfflinePseudoLabel,
    PseudoLabel,
    Supervised,
)
from lit_effdl.models import create_backbone

LOW_DTYPE = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
NET = dict(num_classes=4, in_chans=3, backbone="small_cnn_w8", lr=0.05)


def precision_args(precision: str, scaler: torch.amp.GradScaler | None = None) -> dict:
    """Trainer arguments for ``precision`` on the CPU (fp16: Lightning's plugin, see the module docstring)."""
    if precision == "16-mixed":
        return {"plugins": [MixedPrecision("16-mixed", "cpu", scaler=scaler)]}
    return {"precision": precision}


def trainer(precision: str, scaler=None, **kwargs) -> L.Trainer:
    defaults = dict(accelerator="cpu", devices=1, max_steps=2, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                    num_sanity_val_steps=0)
    return L.Trainer(**{**defaults, **precision_args(precision, scaler), **kwargs})


def data(unlabeled_ratio: int = 2) -> SyntheticDataModule:
    return SyntheticDataModule(num_classes=4, image_size=16, num_train=96, num_test=16, num_labels_per_class=4,
                               batch_size=8, unlabeled_ratio=unlabeled_ratio, eval_batch_size=32)


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """A lit-effdl teacher checkpoint (self-training students) and a plain state_dict (Distill)."""
    folder = tmp_path_factory.mktemp("teachers")
    L.seed_everything(0)
    teacher = Supervised(**NET)
    fit = trainer("32-true", max_steps=4)
    fit.fit(teacher, datamodule=data(0))
    fit.save_checkpoint(folder / "teacher.ckpt")
    torch.save(create_backbone("small_cnn_w8", 4, in_chans=3).state_dict(), folder / "teacher.pt")
    return {"ckpt": str(folder / "teacher.ckpt"), "pt": str(folder / "teacher.pt")}


def make_method(name: str, teachers: dict):
    return {
        "Supervised": lambda: Supervised(**NET),
        "FixMatch": lambda: FixMatch(threshold=0.5, **NET),
        "PseudoLabel": lambda: PseudoLabel(threshold=0.5, rampup_epochs=0, **NET),
        "OfflinePseudoLabel": lambda: OfflinePseudoLabel(threshold=0.3, teacher_checkpoint=teachers["ckpt"], **NET),
        "NoisyStudent": lambda: NoisyStudent(teacher_checkpoint=teachers["ckpt"], min_confidence=0.0, **NET),
        "Finetune": lambda: Finetune(mode="full", **NET),
        "Distill": lambda: Distill(teacher_backbone="small_cnn_w8", teacher_checkpoint=teachers["pt"], **NET),
    }[name]()


class StepRecorder(Callback):
    """The dtype of every training loss and of the trained network's logits; trainable weights at fit start."""

    def __init__(self):
        self.loss_dtypes, self.logit_dtypes, self.start = set(), set(), {}

    def on_fit_start(self, trainer, module):
        self.start = {k: p.detach().clone() for k, p in module.backbone.named_parameters() if p.requires_grad}

        def record(net, inputs, output) -> None:  # returning a value would replace the output
            if net.training:
                self.logit_dtypes.add((output[0] if isinstance(output, (tuple, list)) else output).dtype)

        module.backbone.register_forward_hook(record)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.loss_dtypes.add(outputs["loss"].dtype)

    def changed(self, module) -> list[str]:
        now = dict(module.backbone.named_parameters())
        return [k for k, before in self.start.items() if not torch.equal(before, now[k])]


METHODS = ["Supervised", "FixMatch", "PseudoLabel", "OfflinePseudoLabel", "NoisyStudent", "Finetune", "Distill"]


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_under_mixed_precision(method, precision, teachers):
    """Autocast is on (low-precision logits), every loss is float32, and the steps update the weights."""
    L.seed_everything(0)
    model, recorder = make_method(method, teachers), StepRecorder()
    fit = trainer(precision, callbacks=[recorder])
    fit.fit(model, datamodule=data(0 if method in ("Supervised", "Finetune") else 2))
    assert fit.global_step == 2
    assert recorder.logit_dtypes == {LOW_DTYPE[precision]}, "autocast was not on"
    assert recorder.loss_dtypes == {torch.float32}
    assert recorder.changed(model), "no step was taken"
    if precision == "16-mixed":
        assert fit.precision_plugin.scaler is not None and fit.precision_plugin.scaler.get_scale() == 2.0**16


class WeightsPerStep(Callback):
    """Trainable weights and the logged metrics after each optimizer step (the scaler may have skipped it)."""

    def __init__(self):
        self.weights, self.scales = [], []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.weights.append([p.detach().clone() for p in module.backbone.parameters()])
        self.scales.append(trainer.precision_plugin.scaler.get_scale())


@pytest.mark.parametrize("skip_nonfinite", [False, True])
def test_fp16_overflow_steps_are_skipped_by_the_scaler_not_reported_by_the_guard(skip_nonfinite):
    """A loss scale of 2**22 overflows the fp16 gradients: the scaler skips those steps (weights kept)
    and halves its scale until they fit; the loss is finite, so ``NonFiniteGuard`` neither stops the
    run nor counts a skipped step (``train/skipped_steps``), with ``skip_nonfinite`` or without."""
    L.seed_everything(0)
    model = Supervised(skip_nonfinite=skip_nonfinite, **NET)
    initial = [p.detach().clone() for p in model.backbone.parameters()]
    steps = WeightsPerStep()
    fit = trainer("16-mixed", torch.amp.GradScaler("cpu", init_scale=2.0**22), max_steps=8, callbacks=[steps])
    fit.fit(model, datamodule=data(0))  # a NonFiniteLossError here: the guard reported the overflow
    guard = next(c for c in fit.callbacks if isinstance(c, NonFiniteGuard))
    assert guard.skipped_steps == 0 and "train/skipped_steps" not in fit.callback_metrics
    assert fit.global_step == 8
    scales = [2.0**22, *steps.scales]
    skipped = [k for k in range(8) if scales[k + 1] < scales[k]]
    assert skipped[:2] == [0, 1] and len(skipped) < 8, f"scales {scales}: the first steps did not overflow"
    unchanged = lambda weights: all(torch.equal(a, b) for a, b in zip(initial, weights))  # noqa: E731
    assert unchanged(steps.weights[1]), "a skipped step changed the weights"
    assert not unchanged(steps.weights[-1]), "no step was taken once the scale fitted"


def test_fp16_scaler_state_is_checkpointed_and_resumed(tmp_path):
    """A resumed 16-mixed fit goes on with the saved loss scale, not the scaler's initial 2**16."""
    L.seed_everything(0)
    first = trainer("16-mixed", torch.amp.GradScaler("cpu", init_scale=2.0**40), max_steps=3)
    first.fit(Supervised(**NET), datamodule=data(0))
    saved_scale = first.precision_plugin.scaler.get_scale()
    assert saved_scale < 2.0**40  # the overflowing steps lowered it
    first.save_checkpoint(tmp_path / "fp16.ckpt")
    stored = torch.load(tmp_path / "fp16.ckpt", weights_only=True)
    assert stored["MixedPrecision"]["scale"] == saved_scale

    class ScaleAtStart(Callback):
        def on_train_start(self, trainer, module):
            self.scale = trainer.precision_plugin.scaler.get_scale()

    seen = ScaleAtStart()
    resumed = trainer("16-mixed", max_steps=4, callbacks=[seen])
    resumed.fit(Supervised(**NET), datamodule=data(0), ckpt_path=tmp_path / "fp16.ckpt", weights_only=True)
    assert seen.scale == saved_scale and resumed.global_step == 4


def test_thresholds_on_fp16_logits_are_decided_in_float32():
    """FixMatch's (and PseudoLabel's) ``softmax >= threshold`` on fp16 logits decides as float64 does; the
    same softmax taken in fp16 (values 0.9497 and 0.9502 around 0.95) decides some of these rows wrong."""
    grid = torch.arange(2.80, 3.10, 0.0005)
    logits = torch.stack([grid, torch.zeros_like(grid), grid - 6.0], dim=1).half()  # fp16, as autocast gives
    threshold = 0.95
    exact = logits.double().softmax(-1).max(-1).values
    clear = (exact - threshold).abs() > 1e-6  # rows float32 rounding could tip either way are left out
    in_fp16 = logits.softmax(-1).max(-1).values >= threshold
    assert (in_fp16 != (exact >= threshold))[clear].any(), "no row the fp16 softmax decides differently"
    _, mask, pseudo = confidence_masked_cross_entropy(logits, logits, threshold)
    assert mask.dtype == torch.float32 and torch.equal(pseudo, torch.zeros_like(pseudo))
    assert torch.equal(mask.bool()[clear], (exact >= threshold)[clear])


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_ema_update_under_mixed_precision(precision):
    """The EMA stays float32 and after every step equals ``d * ema + (1 - d) * weights`` with the
    warm-up decay ``d = min(decay, (1 + t) / (10 + t))``, t the optimizer steps taken."""
    decay = 0.9

    class EMAWatch(Callback):
        def __init__(self):
            self.pairs, self.pending = [], None

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):  # before the module's EMA update
            self.pending = ([p.detach().clone() for p in module.ema.module.parameters()],
                            [p.detach().clone() for p in module.backbone.parameters()], trainer.global_step)

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.collect(module)

        def on_train_end(self, trainer, module):
            self.collect(module)

        def collect(self, module):
            if self.pending is not None:
                self.pairs.append((*self.pending, [p.detach().clone() for p in module.ema.module.parameters()]))
                self.pending = None

    L.seed_everything(0)
    model, watch = Supervised(ema_decay=decay, **NET), EMAWatch()
    trainer(precision, max_steps=3, callbacks=[watch]).fit(model, datamodule=data(0))
    assert len(watch.pairs) == 3
    for before, weights, step, after in watch.pairs:
        d = min(decay, (1 + step) / (10 + step))
        for old, live, new in zip(before, weights, after):
            assert new.dtype == torch.float32
            assert torch.allclose(new, d * old + (1 - d) * live, atol=1e-6)
    assert not all(torch.equal(a, b) for a, b in zip(watch.pairs[-1][3], watch.pairs[-1][1])), "EMA equals the weights"
