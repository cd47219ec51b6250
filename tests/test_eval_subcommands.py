"""`lit-effdl validate` and `lit-effdl test --ckpt_path` on a checkpoint of each method family: the
numbers are those of the checkpoint's evaluated network (FixMatch: its EMA copy, not the raw weights),
a distilled student needs no teacher file, the test writes the confusion-matrix figure and per-class
accuracy, and no run logs Lightning's placeholder ``hp_metric``."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lit_effdl.cli import main
from lit_effdl.data import SyntheticDataModule
from lit_effdl.methods import Distill, FixMatch, Supervised
from lit_effdl.models import create_backbone

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")  # main(args) inside pytest
DATA = dict(num_classes=4, image_size=16, num_train=96, num_test=24, batch_size=8, num_labels_per_class=4,
            eval_batch_size=16)
CONFIG = """
seed_everything: 0
trainer: {{max_epochs: 2, accelerator: cpu, devices: 1, enable_progress_bar: false, enable_model_summary: false,
          log_every_n_steps: 2}}
model:
  class_path: lit_effdl.methods.{method}
  init_args: {{backbone: small_cnn_w8, lr: 0.05 {extra}}}
data:
  class_path: lit_effdl.data.SyntheticDataModule
  init_args: {data}
"""
FAMILIES = {  # method, its extra arguments, unlabeled_ratio
    "supervised": (Supervised, "", 0),
    "fixmatch_ema": (FixMatch, ", threshold: 0.5, ema_decay: 0.9", 2),
    "distill": (Distill, ", teacher_backbone: small_cnn_w8, teacher_checkpoint: teacher.pt", 2),
}


def scalars(run: Path) -> tuple[dict[str, float], EventAccumulator]:
    """The last value of every scalar a run folder's TensorBoard events hold."""
    events = EventAccumulator(str(run), size_guidance={"images": 0})
    events.Reload()
    return {tag: events.Scalars(tag)[-1].value for tag in events.Tags()["scalars"]}, events


@torch.no_grad()
def evaluate(net: torch.nn.Module, model, loader) -> dict:
    """Mean cross-entropy, accuracy and per-class (correct, count) of ``net`` on ``loader``, by hand."""
    net.eval()
    losses, correct, per_class = [], 0, {}
    for batch in loader:
        logits = net(model.prepare(batch["image"]))
        losses.append(F.cross_entropy(logits, batch["target"], reduction="sum"))
        for target, hit in zip(batch["target"].tolist(), (logits.argmax(-1) == batch["target"]).tolist()):
            right, count = per_class.get(target, (0, 0))
            per_class[target] = (right + hit, count + 1)
            correct += hit
    count = sum(c for _, c in per_class.values())
    return {"loss": float(sum(losses)) / count, "acc": correct / count, "per_class": per_class}


@pytest.mark.parametrize("family", FAMILIES)
def test_validate_and_test_evaluate_the_checkpoints_evaluated_network(tmp_path, monkeypatch, family):
    method, extra, mu = FAMILIES[family]
    monkeypatch.chdir(tmp_path)
    data = {**DATA, "unlabeled_ratio": mu}
    (tmp_path / "c.yaml").write_text(CONFIG.format(method=method.__name__, extra=extra, data=data))
    if method is Distill:
        torch.manual_seed(0)
        torch.save(create_backbone("small_cnn_w8", 4, in_chans=3).state_dict(), tmp_path / "teacher.pt")
    main(["fit", "--config", "c.yaml"])
    logs = tmp_path / "lightning_logs"
    ckpt = str(logs / "version_0" / "checkpoints" / "last.ckpt")
    if method is Distill:
        (tmp_path / "teacher.pt").unlink()  # evaluating a student needs no teacher
    main(["validate", "--config", "c.yaml", "--ckpt_path", ckpt])
    main(["test", "--config", "c.yaml", "--ckpt_path", ckpt])

    model = method.load_from_checkpoint(ckpt, weights_only=True)
    dm = SyntheticDataModule(**data)
    dm.setup("test")
    evaluated = {"val": evaluate(model.eval_backbone, model, dm.val_dataloader()),
                 "test": evaluate(model.eval_backbone, model, dm.test_dataloader())}
    for run, stage in (("version_1", "val"), ("version_2", "test")):
        logged, _ = scalars(logs / run)
        assert logged[f"{stage}/loss"] == pytest.approx(evaluated[stage]["loss"], rel=1e-5), stage
        assert logged[f"{stage}/acc"] == pytest.approx(evaluated[stage]["acc"], abs=1e-6), stage
    if method is FixMatch:  # the EMA copy is the one evaluated, and it is not the raw network
        raw = evaluate(model.backbone, model, dm.test_dataloader())["loss"]
        assert raw != pytest.approx(evaluated["test"]["loss"], rel=1e-3)


@pytest.fixture
def supervised_tested(tmp_path, monkeypatch):
    """A supervised fit then ``lit-effdl test`` on its last checkpoint: (logs folder, checkpoint, data args)."""
    monkeypatch.chdir(tmp_path)
    data = {**DATA, "unlabeled_ratio": 0}
    (tmp_path / "c.yaml").write_text(CONFIG.format(method="Supervised", extra="", data=data))
    main(["fit", "--config", "c.yaml"])
    ckpt = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    main(["test", "--config", "c.yaml", "--ckpt_path", str(ckpt)])
    return tmp_path / "lightning_logs", ckpt, data


def test_test_logs_the_confusion_figure_and_per_class_accuracy_counted_by_hand(supervised_tested):
    logs, ckpt, data = supervised_tested
    model = Supervised.load_from_checkpoint(ckpt, weights_only=True)
    dm = SyntheticDataModule(**data)
    dm.setup("test")
    per_class = evaluate(model.eval_backbone, model, dm.test_dataloader())["per_class"]
    logged, events = scalars(logs / "version_1")
    names = model.hparams.class_names
    assert {tag for tag in logged if tag.startswith("test/acc_class/")} == {f"test/acc_class/{n}" for n in names}
    for k, name in enumerate(names):
        right, count = per_class[k]
        assert logged[f"test/acc_class/{name}"] == pytest.approx(right / count, abs=1e-6), name
    assert events.Tags()["images"] == ["test/confusion_matrix"]
    image = events.Images("test/confusion_matrix")[-1]
    assert image.width >= 400 and image.height >= 400  # a figure with names and counts, not 16-pixel cells


def test_no_run_logs_the_placeholder_hp_metric(supervised_tested):
    """Lightning's TensorBoard logger writes ``hp_metric`` = -1 unless told not to; it carries nothing here."""
    logs, _, _ = supervised_tested
    for run in ("version_0", "version_1"):  # fit, test
        logged, _ = scalars(logs / run)
        assert "hp_metric" not in logged and ("val/acc" in logged or "test/acc" in logged), run


def test_confusion_figure_names_both_axes_writes_counts_and_colours_row_shares():
    from lit_effdl.callbacks.confusion import confusion_figure

    matrix = torch.tensor([[5, 1, 0], [2, 2, 0], [0, 0, 3]])
    ax = confusion_figure(matrix, ["cat", "dog", "ship"]).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["cat", "dog", "ship"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["cat", "dog", "ship"]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("Predicted", "True")
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert cells == {(row, col): str(int(matrix[row, col])) for row in range(3) for col in range(3)}
    image = ax.images[0]
    shares = torch.tensor([[5 / 6, 1 / 6, 0], [0.5, 0.5, 0], [0, 0, 1]])
    assert torch.allclose(torch.as_tensor(image.get_array().data, dtype=torch.float32), shares)
    assert image.get_clim() == (0.0, 1.0)  # a share's colour means the same in every figure
