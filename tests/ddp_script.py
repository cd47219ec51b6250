"""Run a 2-process DDP script outside pytest (tests only): in-process DDP would re-launch pytest.

The script gets one argument, ``OUT``, saves its 1-process result to ``OUT.single`` and each rank's
to ``OUT.rank<R>`` (``torch.save``); :func:`single_and_ranks` runs it and loads them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch


def single_and_ranks(folder: Path, script_text: str, ranks: int = 2) -> tuple[dict, list[dict]]:
    """Write ``script_text`` to ``folder``, run it, return (1-process result, per-rank results)."""
    script, out = folder / "ddp_script.py", folder / "result"
    script.write_text(script_text)
    proc = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    load = lambda suffix: torch.load(f"{out}.{suffix}", weights_only=True)
    return load("single"), [load(f"rank{r}") for r in range(ranks)]
