#!/usr/bin/env python
"""One entry point for every benchmark: ``python scripts/bench.py SUITE [--json]``.

Each suite lives in ``scripts/benchmarks/<suite>.py`` and defines ``run(args) -> dict``; it warms
up, repeats, takes medians and prints a human table. With ``--json`` the last stdout line is the
suite's JSON result. Benchmarks are scripts, never timed tests: these machines are noisy, so each
suite reports ratios measured side by side in one process.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def suites() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules([str(HERE / "benchmarks")]) if not m.name.startswith("_"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suite", help=f"one of: {', '.join(suites())}")
    parser.add_argument("--json", action="store_true", help="end stdout with the JSON result line")
    parser.add_argument("--repeats", type=int, default=None, help="timed repetitions (suite default if unset)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args()
    if args.suite not in suites():
        parser.error(f"unknown suite '{args.suite}': valid suites are {', '.join(suites())}")
    from lit_effdl.runtime import tune_allocator

    tune_allocator()  # as the lit-effdl CLI does; both sides of every comparison run in this process
    module = importlib.import_module(f"benchmarks.{args.suite}")
    result = module.run(args)
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
