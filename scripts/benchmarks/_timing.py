"""Shared timing helpers for the benchmark suites."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def median_time(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def print_table(title: str, rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    print(f"\n{title}")
    for key, value in rows:
        print(f"  {key.ljust(width)}  {value}")


def alternating(arms: dict[str, Callable[[], tuple[float, float]]], repeats: int
                ) -> tuple[dict[str, list[float]], dict[str, float], dict[str, float]]:
    """Each arm (returning wall and CPU seconds) once per repeat, in turn, so drift hits every arm
    alike: per arm its wall times, its median wall time and its median CPU time."""
    times: dict[str, list[float]] = {key: [] for key in arms}
    cpu: dict[str, list[float]] = {key: [] for key in arms}
    for _ in range(repeats):
        for key, fn in arms.items():
            wall, used = fn()
            times[key].append(wall)
            cpu[key].append(used)
    return times, {k: statistics.median(v) for k, v in times.items()}, {k: statistics.median(v) for k, v in cpu.items()}


def ratios(times: dict[str, list[float]], med: dict[str, float], med_cpu: dict[str, float], top: str,
           bottom: str) -> tuple[float, float, float]:
    """``top / bottom`` of the median wall times, of the median CPU times, and the median of the
    per-repeat wall-time ratios (4 decimals)."""
    paired = statistics.median(a / b for a, b in zip(times[top], times[bottom]))
    return round(med[top] / med[bottom], 4), round(med_cpu[top] / med_cpu[bottom], 4), round(paired, 4)
