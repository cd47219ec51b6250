"""scripts/label_efficiency.py end to end: parallel fits, resume from runs.jsonl, the JSON last line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY = "--trainer.max_epochs 1 --data.init_args.labeled_samples_per_epoch 32 --trainer.limit_val_batches 2"


def _run(out: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "scripts" / "label_efficiency.py"), "--labels-per-class", "2",
           "--methods", "supervised", "--seeds", "0,1", "--jobs", "2", "--out", str(out), "--extra", TINY]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)


def test_parallel_fits_write_table_picture_and_json_then_resume(tmp_path):
    first = _run(tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    payload = json.loads(first.stdout.strip().splitlines()[-1])
    rows = payload["results"]
    assert sorted((r["method"], r["labels_per_class"], r["seed"]) for r in rows) == [
        ("supervised", 2, 0), ("supervised", 2, 1)]
    assert all(0.0 <= r["test_acc"] <= 1.0 and r["seconds"] > 0 for r in rows)
    for r in rows:  # the run folder names the protocol and the config's fingerprint (then the --extra hash)
        assert r["test_checkpoint"] == "last"
        assert list((tmp_path / "supervised" / "lpc2").glob(f"seed{r['seed']}-last-{r['config']}_*"))
    assert "| supervised |" in first.stdout
    assert (tmp_path / "label_efficiency.png").stat().st_size > 0
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == 2
    again = _run(tmp_path)  # finished runs are read back, not redone
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout.strip().splitlines()[-1])["results"] == rows
    assert "test/acc" not in again.stdout


def test_an_edited_config_is_a_new_run(tmp_path, monkeypatch):
    """The cache key and the run folder carry the config's fingerprint: a stale result is never reused."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("label_efficiency_mod", ROOT / "scripts" / "label_efficiency.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    shipped = module.config_path("digits", "supervised")
    config = tmp_path / shipped.relative_to(ROOT)
    config.parent.mkdir(parents=True)
    config.write_text(shipped.read_text())
    monkeypatch.setattr(module, "ROOT", tmp_path)
    before = module.config_fingerprint("digits", "supervised")
    config.write_text(config.read_text() + "# one edit\n")
    assert module.config_fingerprint("digits", "supervised") != before
    assert len(before) == 8
    with pytest.raises(module.UserError, match="no config"):
        module.config_fingerprint("digits", "nonexistent")
