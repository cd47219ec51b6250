"""Run many `lit-effdl` invocations as separate processes after one import (tests only).

``python tests/cli_runner.py CASES.json OUT.json``: CASES is a list of ``{"args": [...], "cwd": ...}``.
Each case runs the real CLI ``main()`` in a forked child process (its own pid, exit code and
stderr), so a catalogue of bad inputs costs one interpreter start-up, not one per case.
Tests call ``run_in_runner(cases, folder)``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import lit_effdl.cli  # noqa: F401  (imported once, shared by the forked children)
import lit_effdl.experiment  # noqa: F401
import lit_effdl.data  # noqa: F401
import lit_effdl.methods  # noqa: F401


def run_case(args: list[str], cwd: str) -> dict:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:  # child: the CLI exactly as the console script runs it
            os.chdir(cwd)
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            code = 0
            try:
                sys.argv = ["lit-effdl", *args]
                lit_effdl.cli.main()
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
            except BaseException:
                import traceback

                traceback.print_exc()
                code = 1
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        out.seek(0)
        err.seek(0)
        return {
            "returncode": os.waitstatus_to_exitcode(status),
            "stdout": out.read().decode(errors="replace"),
            "stderr": err.read().decode(errors="replace"),
        }


def run_in_runner(cases: list[dict], folder: Path) -> list[dict]:
    """Run ``cases`` through this runner in one subprocess (offline); one result dict per case."""
    (folder / "cases.json").write_text(json.dumps(cases))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, __file__, str(folder / "cases.json"), str(folder / "out.json")],
                   check=True, env=env, timeout=600)
    return json.loads((folder / "out.json").read_text())


if __name__ == "__main__":
    cases = json.load(open(sys.argv[1]))
    results = [run_case(case["args"], case["cwd"]) for case in cases]
    json.dump(results, open(sys.argv[2], "w"))
