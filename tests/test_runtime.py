"""Process-level allocator tuning applied by the CLI and the scripts."""

from __future__ import annotations

import sys

import pytest

from lit_effdl.runtime import tune_allocator


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_tune_allocator_applies_on_glibc_and_respects_opt_outs(monkeypatch):
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    monkeypatch.setenv("LIT_EFFDL_TUNE_MALLOC", "0")
    assert tune_allocator() is False
    monkeypatch.setenv("LIT_EFFDL_TUNE_MALLOC", "1")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1000")  # the user's own choice wins
    assert tune_allocator() is False
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    assert tune_allocator() is True
