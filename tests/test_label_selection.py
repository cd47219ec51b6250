"""Class-blind budgets (``label_selection: random | file``) and ``lit-effdl select`` on loose images."""

from __future__ import annotations

import csv
import json

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torchvision.io import write_png

from lit_effdl.data import ImageFolderDataModule, SyntheticDataModule
from lit_effdl.data.datamodule import SPLIT_FILE
from lit_effdl.data.label_selection import read_selected, write_selection_csv
from lit_effdl.data.splits import label_budget_split
from lit_effdl.errors import UserError

TARGETS = np.repeat(np.arange(4), [40, 30, 20, 10])


# ---------------------------------------------------------------- the split, as pure functions
def test_random_budget_is_blind_to_class_seeded_and_outside_validation():
    a = label_budget_split(TARGETS, num_labels=12, val_fraction=0.1, seed=0, selection="random")
    b = label_budget_split(TARGETS, num_labels=12, val_fraction=0.1, seed=0, selection="random")
    c = label_budget_split(TARGETS, num_labels=12, val_fraction=0.1, seed=1, selection="random")
    stratified = label_budget_split(TARGETS, num_labels=12, val_fraction=0.1, seed=0)
    assert len(a.labeled) == 12 and a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert not set(a.labeled) & set(a.val) and np.array_equal(a.val, stratified.val)
    counts = [np.bincount(TARGETS[label_budget_split(TARGETS, num_labels=12, seed=s, selection="random").labeled],
                          minlength=4) for s in range(20)]
    assert any(k.max() - k.min() > 1 for k in counts)  # not spread evenly over classes, as stratified is


def test_file_budget_labels_exactly_the_selection_and_keeps_it_out_of_validation():
    stratified = label_budget_split(TARGETS, num_labels=8, val_fraction=0.2, seed=0)
    selected = np.array([stratified.val[0], 5, 99, stratified.val[3]])
    split = label_budget_split(TARGETS, val_fraction=0.2, seed=0, selection="file", selected=selected)
    assert split.labeled.tolist() == sorted(selected.tolist())
    assert split.val.tolist() == sorted(set(stratified.val.tolist()) - set(selected.tolist()))
    assert sorted([*split.labeled, *split.unlabeled, *split.val]) == list(range(len(TARGETS)))


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_labels=0), r"num_labels=0 is not valid: use 1\.\.90"),
    (dict(num_labels=91), r"num_labels=91 is not valid: use 1\.\.90"),
    (dict(num_labels=None), "label_selection: random needs num_labels"),
    (dict(num_labels_per_class=2), "num_labels_per_class=2 is stratified by class"),
])
def test_bad_random_budget_is_one_clear_error(kwargs, message):
    with pytest.raises(UserError, match=message):
        label_budget_split(TARGETS, val_fraction=0.1, selection="random", **kwargs)


# ---------------------------------------------------------------- selection files
def write_rows(path, rows, header=("index", "path", "score", "cluster")):
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    return str(path)


@pytest.mark.parametrize("rows, message", [
    ([[3, "", 1, 0], [100, "", 1, 0]], r"line 3: index 100 is not in the training pool: use 0\.\.99"),
    ([[3, "", 1, 0], ["x", "", 1, 0]], r"line 3: index 'x' is not valid"),
    ([[3, "", 1, 0], [7, "", 1, 0], [3, "", 1, 0]], r"list pool indices \[3\] more than once"),
    ([[0, "b/missing.png", 1, 0]], r"path 'b/missing.png' is not in the training pool \(100 images under /data\)"),
    ([], "lists no images"),
])
def test_bad_selection_file_is_one_clear_error(tmp_path, rows, message):
    paths = [f"/data/a/{i}.png" for i in range(100)]
    with pytest.raises(UserError, match=message):
        read_selected(write_rows(tmp_path / "s.csv", rows), 100, paths, "/data")


def test_selection_files_read_back_by_path_before_index_and_across_rounds(tmp_path):
    paths = [f"/data/{c}/{i}.png" for c in "ab" for i in range(5)]
    write_selection_csv(tmp_path / "r0.csv", [7, 2], [0.5, 0.25], [1, 0], paths, root="/data")
    rows = list(csv.DictReader(open(tmp_path / "r0.csv")))
    assert [r["path"] for r in rows] == ["b/2.png", "a/2.png"] and rows[0]["score"] == "0.5"
    write_rows(tmp_path / "r1.csv", [[0, "a/4.png", "", ""]])  # the path decides, not the stale index
    assert read_selected([tmp_path / "r0.csv", tmp_path / "r1.csv"], 10, paths, "/data").tolist() == [7, 2, 4]
    with pytest.raises(UserError, match="more than once"):
        read_selected([tmp_path / "r0.csv", tmp_path / "r0.csv"], 10, paths, "/data")


def test_data_module_trains_on_the_file_and_records_how_labels_were_chosen(tmp_path):
    file = write_rows(tmp_path / "s.csv", [[i, "", 0, 0] for i in (40, 3, 17)])
    with pytest.raises(UserError, match="label_selection: file needs label_selection_file"):
        SyntheticDataModule(label_selection="file")
    with pytest.raises(UserError, match="set label_selection: file"):
        SyntheticDataModule(num_labels=3, label_selection_file=file)
    dm = SyntheticDataModule(num_train=64, label_selection="file", label_selection_file=file, val_fraction=0.25)
    dm.trainer = L.Trainer(default_root_dir=str(tmp_path), logger=L.pytorch.loggers.CSVLogger(str(tmp_path)))
    dm.setup("fit")
    assert dm.labeled_source.indices.tolist() == [3, 17, 40]
    assert {3, 17, 40}.isdisjoint(dm.split.val.tolist() + dm.split.unlabeled.tolist())
    saved = json.loads((tmp_path / "lightning_logs" / "version_0" / SPLIT_FILE).read_text())
    assert saved["label_selection"] == "file" and saved["label_selection_file"] == file
    assert saved["labeled"] == [3, 17, 40]
    with pytest.raises(UserError, match="num_labels=5 but the selection file lists 3 images"):
        SyntheticDataModule(num_labels=5, label_selection="file", label_selection_file=file).setup("fit")


# ---------------------------------------------------------------- lit-effdl select on loose images
@pytest.fixture
def image_folder(tmp_path):
    """3 class folders of 10 tiny PNGs (synthetic gratings) and a config reading them."""
    images = SyntheticDataModule(num_classes=3, image_size=16, num_train=30).sources.train
    for i in range(30):
        folder = tmp_path / "train" / f"class_{images.targets[i]}"
        folder.mkdir(parents=True, exist_ok=True)
        write_png(images.images[i], str(folder / f"{i:02d}.png"))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"data": {"class_path": "lit_effdl.data.ImageFolderDataModule", "init_args": {
        "root": str(tmp_path / "train"), "test_root": str(tmp_path / "train"), "image_size": 16,
        "val_fraction": 0.0, "num_workers": 0}}}))
    return tmp_path, str(config)


def select(config, *args):
    from lit_effdl.cli import main

    main(["select", "--config", config, *args])


def folder_module(root, **kwargs):
    return ImageFolderDataModule(root=str(root / "train"), test_root=str(root / "train"), image_size=16,
                                 val_fraction=0.0, num_workers=0, **kwargs)


def test_select_writes_the_csv_and_contact_sheet_and_the_next_round_skips_them(image_folder, capsys):
    root, config = image_folder
    select(config, "--strategy", "typiclust", "--budget", "4", "--out", str(root / "round0"))
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = list(csv.DictReader(open(root / "round0" / "selection.csv")))
    assert [int(r["index"]) for r in rows] == result["indices"] and len(rows) == 4
    assert all(r["path"].startswith("class_") and r["path"].endswith(".png") for r in rows)
    sheet = torch.from_numpy(np.array(__import__("PIL.Image").Image.open(root / "round0" / "selection.png")))
    assert sheet.shape[0] >= 2 * 64 and sheet.shape[1] >= 2 * 64  # a 2 x 2 grid of enlarged tiles
    select(config, "--strategy", "probcover", "--budget", "3", "--out", str(root / "round1"),
           "--labeled", str(root / "round0" / "selection.csv"))
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["already_labeled"] == 4 and not set(again["indices"]) & set(result["indices"])


def test_file_selection_trains_on_exactly_the_chosen_images_and_hidden_labels_never_reach_a_loss(
        image_folder, fast_trainer_kwargs, capsys):
    """The labeled set is the CSV's images with their true labels; the unlabeled images' hidden labels
    may be anything: a FixMatch fit on permuted hidden labels ends with the same weights."""
    from lit_effdl.methods import FixMatch

    root, config = image_folder
    select(config, "--strategy", "random", "--budget", "6", "--out", str(root / "sel"))
    chosen = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["indices"]
    weights = []
    for permute in (False, True):
        dm = folder_module(root, label_selection="file", label_selection_file=str(root / "sel" / "selection.csv"),
                           batch_size=3, unlabeled_ratio=2, labeled_augment="none")
        truth = dm.sources.train.targets.copy()
        if permute:  # every unselected image gets another class: they are hidden, so nothing may change
            rest = np.setdiff1d(np.arange(len(truth)), chosen)
            dm.sources.train.targets[rest] = (truth[rest] + 1) % 3
        dm.setup("fit")
        assert dm.labeled_source.indices.tolist() == sorted(chosen)
        assert dm.labeled_source.targets.tolist() == truth[sorted(chosen)].tolist()
        labeled = dm.labeled_dataset()  # what the labeled loader hands the method
        assert [labeled[i]["target"] for i in range(len(labeled))] == truth[sorted(chosen)].tolist()
        L.seed_everything(0)
        model = FixMatch(num_classes=3, in_chans=3, threshold=0.5, ema_decay=0.0)
        L.Trainer(max_steps=3, limit_val_batches=0, **fast_trainer_kwargs).fit(model, datamodule=dm)
        weights.append({k: v.clone() for k, v in model.state_dict().items()})
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert any(not torch.equal(weights[0][k], FixMatch(num_classes=3, in_chans=3).state_dict()[k]) for k in weights[0])


def fake_checkpoint(path, image_size):
    from lit_effdl.models.factory import create_backbone

    net = create_backbone("small_cnn", 3, in_chans=3)
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in net.state_dict().items()},
                "hyper_parameters": {"backbone": "small_cnn", "num_classes": 3, "in_chans": 3},
                "lit_effdl": {"image_size": image_size}}, path)
    return str(path)


def test_select_with_a_checkpoint_and_one_for_another_image_size(image_folder, capsys):
    root, config = image_folder
    good = fake_checkpoint(root / "ok.ckpt", 16)
    for strategy in ("kmeans_centers", "margin"):
        select(config, "--strategy", strategy, "--budget", "3", "--ckpt_path", good, "--out", str(root / strategy))
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["embedding"] == good
    with pytest.raises(SystemExit) as stop:
        select(config, "--strategy", "typiclust", "--budget", "3", "--ckpt_path", fake_checkpoint(root / "b.ckpt", 32),
               "--out", str(root / "bad"))
    assert stop.value.code == 2
    assert "was trained on 32x32 images but the config's data gives 16x16" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        select(config, "--strategy", "typiclust", "--budget", "31", "--out", str(root / "bad"))
    assert "budget=31 is not valid: use 1..30" in capsys.readouterr().err


def test_one_pool_is_embedded_once_per_process_until_the_checkpoint_changes(image_folder, capsys, monkeypatch):
    import lit_effdl.select.command as command

    root, config = image_folder
    calls, real = [], command.network_outputs
    monkeypatch.setattr(command, "network_outputs", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    ckpt = fake_checkpoint(root / "ok.ckpt", 16)
    for strategy in ("kmeans_centers", "typiclust", "probcover"):
        command.select(config, strategy, 3, root / strategy, ckpt_path=ckpt)
    assert calls == [ckpt]
    fake_checkpoint(root / "ok.ckpt", 16)  # rewritten: embedded again
    command.select(config, "typiclust", 3, root / "again", ckpt_path=ckpt)
    assert calls == [ckpt, ckpt]


def test_select_embeds_with_a_headless_simclr_checkpoint_and_refuses_it_for_probabilities(image_folder, capsys):
    """A SimCLR run's backbone has no classifier (and a projector beside it): its pooled features
    embed the pool; margin / entropy need class probabilities, which it cannot give."""
    from lit_effdl.models.auxiliary import pooled_features
    from lit_effdl.models.factory import create_backbone
    from lit_effdl.select.embed import network_outputs

    root, config = image_folder
    net = create_backbone("small_cnn", 3, in_chans=3)
    net.reset_classifier(0)
    state = {f"backbone.{k}": v for k, v in net.state_dict().items()} | {"projector.0.weight": torch.ones(4, 2)}
    path = str(root / "simclr.ckpt")
    torch.save({"state_dict": state, "hyper_parameters": {"backbone": "small_cnn", "num_classes": 3, "in_chans": 3},
                "lit_effdl": {"image_size": 16}}, path)
    pool = folder_module(root).sources.train
    embedded = network_outputs(path, pool, 16, "embeddings")
    net.eval()
    with torch.no_grad():
        expected = pooled_features(net, torch.stack([pool.load(i) for i in range(len(pool))]).float() / 255 * 2 - 1)
    torch.testing.assert_close(torch.from_numpy(embedded), F.normalize(expected, dim=1), rtol=1e-4, atol=1e-5)
    select(config, "--strategy", "kmeans_centers", "--budget", "3", "--ckpt_path", path, "--out", str(root / "k"),
           "--whiten_dims", "8")
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(printed["indices"]) == 3 and printed["embedding"] == f"{path} whitened to 8"
    with pytest.raises(SystemExit):
        select(config, "--strategy", "margin", "--budget", "3", "--ckpt_path", path, "--out", str(root / "m"))
    assert "has no classifier ('fc.bias' missing: a self-supervised run such as SimCLR)" in capsys.readouterr().err
