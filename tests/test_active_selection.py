"""scripts/active_rounds.py (rounds grow the labels, resume) and scripts/selection_demo.py --quick, end to end."""

from __future__ import annotations

import csv
import importlib
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
        "--trainer.num_sanity_val_steps", "0"]


def _script(name: str, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))  # the scripts import their siblings
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return importlib.import_module(name)


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _indices(path: Path) -> list[int]:
    with path.open() as f:
        return [int(row["index"]) for row in csv.DictReader(f)]


def test_rounds_grow_the_labels_by_the_budget_and_a_rerun_skips_finished_rounds(tmp_path, monkeypatch, capsys):
    active = _script("active_rounds", monkeypatch)
    argv = ["--config", str(ROOT / "configs/digits/fixmatch.yaml"), "--budget", "6", "--out", str(tmp_path), *TINY]
    assert active.main([*argv, "--rounds", "1"]) == 0
    first = _last_json(capsys)["rounds"]
    round0, real_select = tmp_path / "round_0", active.select
    stamp = (round0 / "result.json").stat().st_mtime_ns
    calls = []
    spy = lambda *a, **k: calls.append(list(k["labeled"] or [])) or real_select(*a, **k)  # noqa: E731
    monkeypatch.setattr(active, "select", spy)
    assert active.main([*argv, "--rounds", "2"]) == 0  # round 0 read back, round 1 added
    assert calls == [[str(round0 / "selection.csv")]]  # ranked skipping round 0's
    rounds = _last_json(capsys)["rounds"]
    assert rounds[0] == first[0] and (round0 / "result.json").stat().st_mtime_ns == stamp
    assert len(list(round0.glob("lightning_logs/version_*"))) == 1  # round 0 was not trained again
    assert [r["round"] for r in rounds] == [0, 1] and [r["labeled"] for r in rounds] == [6, 12]
    assert [r["strategy"] for r in rounds] == ["typiclust", "margin"]
    assert all(1 <= r["classes_covered"] <= min(10, r["labeled"]) and 0 <= r["test_acc"] <= 1 for r in rounds)
    chosen = [_indices(tmp_path / f"round_{r}" / "selection.csv") for r in (0, 1)]
    assert len(chosen[1]) == 6 and not set(chosen[0]) & set(chosen[1])  # the next batch, never a labeled image
    split = json.loads(next((tmp_path / "round_1").glob("lightning_logs/version_*/label_split.json")).read_text())
    assert sorted(split["labeled"]) == sorted(chosen[0] + chosen[1])  # round 1 trains on the union
    stored = json.loads((tmp_path / "round_1" / "result.json").read_text())
    assert Path(stored["checkpoint"]).is_file() and (tmp_path / "round_1" / "selection.png").is_file()


def test_selection_demo_quick_prints_per_fit_results_and_writes_the_plot(tmp_path, monkeypatch, capsys):
    demo = _script("selection_demo", monkeypatch)
    assert demo.main(["--quick", "--strategies", "random,typiclust", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = json.loads(out.strip().splitlines()[-1])["results"]
    assert [(r["strategy"], r["budget"], r["seed"]) for r in rows] == [("random", 10, 0), ("typiclust", 10, 0)]
    for r in rows:
        assert set(r) == {"strategy", "budget", "seed", "classes_covered", "test_acc"} and 0 <= r["test_acc"] <= 1
        selected = _indices(tmp_path / r["strategy"] / "b10_seed0" / "selection.csv")
        targets = demo.data_module(str(ROOT / "configs/digits/fixmatch.yaml"), []).sources.train.targets
        assert len(selected) == 10 and r["classes_covered"] == len(set(targets[selected].tolist()))
    assert "| typiclust |" in out and "/10 classes" in out
    assert (tmp_path / "selection_demo.png").stat().st_size > 0
    assert json.loads((tmp_path / "results.json").read_text())["results"] == rows


def test_selection_demo_selection_only_counts_classes_and_trains_nothing(tmp_path, monkeypatch, capsys):
    demo = _script("selection_demo", monkeypatch)
    argv = ["--quick", "--selection_only", "--strategies", "random,kmeans_centers", "--out", str(tmp_path)]
    assert demo.main(argv) == 0
    out = capsys.readouterr().out
    rows = json.loads(out.strip().splitlines()[-1])["results"]
    targets = demo.data_module(str(ROOT / "configs/digits/fixmatch.yaml"), []).sources.train.targets
    for r in rows:
        selected = _indices(tmp_path / r["strategy"] / "b10_seed0" / "selection.csv")
        assert "test_acc" not in r and r["classes_covered"] == len(set(targets[selected].tolist()))
    assert "| kmeans_centers |" in out and json.loads((tmp_path / "coverage.json").read_text())["results"] == rows
    assert not list(tmp_path.rglob("lightning_logs")) and not (tmp_path / "results.json").exists()
