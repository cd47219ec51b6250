"""Fits done once: a finished fit's ``result.json`` records the settings it ran with, and a call with
the same settings returns it instead of training again (the scripts' resumable stages)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from lit_effdl.experiment import run_fit
from lit_effdl.io import write_json_atomic

RESULT_FILE = "result.json"


def fit_settings(config: str, overrides: list[str]) -> dict:
    """What a fit's result depends on: the config's text, the overrides, the files they name (a
    retrained teacher or pretrained checkpoint is a new file)."""
    files = {o: os.stat(o).st_mtime_ns for o in overrides if os.path.isfile(o)}
    return {"config": config, "config_sha1": hashlib.sha1(Path(config).read_bytes()).hexdigest(),
            "overrides": overrides, "files": files}


def fit_once(config: str, overrides: list[str], run_dir: str, test: bool = True) -> dict:
    """One ``run_fit`` (skipped when ``run_dir/result.json`` holds the same settings): test accuracy
    (None without ``test``), best validation accuracy, the checkpoint (the tested one; without
    ``test``, ``last.ckpt``), seconds, and ``reused`` (True when nothing was trained)."""
    done, key = Path(run_dir) / RESULT_FILE, fit_settings(config, overrides)
    if done.is_file():
        stored = json.loads(done.read_text())
        if stored.get("settings") == key:
            return {**stored, "reused": True}
    start = time.perf_counter()
    result = run_fit(config, overrides, run_dir, test=test)
    last = Path(result["log_dir"] or run_dir) / "checkpoints" / "last.ckpt"
    record = {"settings": key, "test_acc": result["test_acc"], "val_acc": result["val_acc"],
              "checkpoint": result["tested_checkpoint"] or (str(last) if last.is_file() else ""),
              "seconds": round(time.perf_counter() - start, 1)}
    write_json_atomic(done, record)
    return {**record, "reused": False}
