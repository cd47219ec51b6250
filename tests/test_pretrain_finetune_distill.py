"""scripts/pretrain_finetune_distill.py (SimCLRv2: pretrain, fine-tune, distill) end to end, in this
process: --quick on digits, the distillation pipeline (SimCLR -> fine-tune -> distill), then a rerun
that reuses every finished stage; bad arguments are refused by name."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
STAGES = ("simclr", "simclr_finetune", "simclr_finetune_distill")


@pytest.fixture
def script(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))  # it imports its sibling label_efficiency, as when run
    return importlib.import_module("pretrain_finetune_distill")


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_quick_pipeline_writes_checkpoints_and_json_then_reuses_its_stages(script, tmp_path, capsys):
    argv = ["--quick", "--labels-per-class", "2", "--pipelines", "simclr_finetune_distill", "--out", str(tmp_path)]
    assert script.main(argv) == 0
    first = last_json(capsys)
    assert sorted((r["pipeline"], r["labels_per_class"], r["seed"]) for r in first["results"]) == [
        ("simclr_finetune", 2, 0), ("simclr_finetune_distill", 2, 0)]
    assert all(0.0 <= r["test_acc"] <= 1.0 for r in first["results"])
    assert (first["stages_run"], first["stages_reused"]) == (3, 0)
    checkpoints = {}
    for stage in STAGES:
        record = json.loads((tmp_path / "digits_2lpc_seed0" / stage / "result.json").read_text())
        checkpoint = Path(record["checkpoint"])
        assert checkpoint.name == "last.ckpt" and checkpoint.is_relative_to(tmp_path / "digits_2lpc_seed0" / stage)
        checkpoints[stage] = (checkpoint, checkpoint.stat().st_mtime_ns)
    distill = json.loads((tmp_path / "digits_2lpc_seed0" / "simclr_finetune_distill" / "result.json").read_text())
    overrides = distill["settings"]["overrides"]  # the teacher is stage 3's network
    assert overrides[overrides.index("--model.init_args.teacher_checkpoint") + 1] == str(checkpoints["simclr_finetune"][0])
    assert json.loads((tmp_path / "results.json").read_text())["results"] == first["results"]

    assert script.main(argv) == 0  # the rerun trains nothing
    again = last_json(capsys)
    assert (again["stages_run"], again["stages_reused"]) == (0, 3)
    assert again["results"] == first["results"]
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in checkpoints.values())


@pytest.mark.parametrize("argv, named", [(["--dataset", "cifar"], "'cifar'"),
                                         (["--labels-per-class", "0,x"], "'0,x'"),
                                         (["--pipelines", "simclr_linear,byol"], "byol")])
def test_bad_arguments_are_refused_by_name(script, capsys, argv, named):
    with pytest.raises(SystemExit) as exit_info:
        script.main(argv)
    assert exit_info.value.code == 2 and named in capsys.readouterr().err
