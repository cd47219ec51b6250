"""Benchmark plumbing that runs in seconds: the GPU script's skip path and the growth slope."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))


def test_bench_gpu_skips_cleanly_without_gpu(tmp_path):
    out = tmp_path / "gpu.json"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "bench_gpu.sh"), str(out)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "SKIPPED" in proc.stdout and "no CUDA GPU" in proc.stdout
    assert json.loads(out.read_text())["skipped"] is True


def test_growth_slope_reads_linear_and_quadratic():
    from benchmarks.growth import slope

    sizes = [1.0, 2.0, 4.0]
    assert slope(sizes, [3.0 * s for s in sizes]) == pytest.approx(1.0)
    assert slope(sizes, [s * s for s in sizes]) == pytest.approx(2.0)
