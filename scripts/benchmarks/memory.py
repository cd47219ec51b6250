"""Peak RSS of pseudo-labeling a lazily read folder of 10k vs 100k small synthetic PNGs.

Each size runs in its own fresh Python process (peak RSS is per process): list the folder
(``loose_images_source``, paths only), run this project's pass (``predict_probs`` over an
``ImagesOnlyView``) with a small CNN, keep ``make_pseudo_labels``' index / label / confidence.
``rss_growth_mb`` = peak(100k) - peak(10k): what grows with the set size. The PNGs (16x16 RGB) are
generated once into ``$LIT_EFFDL_BENCH_DIR`` (default ``/tmp/lit_effdl_bench``) and reused.
Sizes alternate 10k, 100k, 10k, 100k... so machine load hits both alike; medians are reported.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks._timing import print_table

SIZE = 16
PER_DIR = 1000


def image_dir(n: int) -> Path:
    return Path(os.environ.get("LIT_EFFDL_BENCH_DIR", "/tmp/lit_effdl_bench")) / f"png{n}"


def ensure_images(n: int) -> Path:
    """``n`` random 16x16 RGB PNGs in sub-folders of 1000; generated once (a ``.complete`` marker)."""
    from torchvision.io import encode_png, write_file

    root = image_dir(n)
    if (root / ".complete").exists():
        return root
    print(f"generating {n} PNGs into {root} (once)...", flush=True)
    gen = torch.Generator().manual_seed(n)
    for start in range(0, n, PER_DIR):
        sub = root / f"d{start // PER_DIR:04d}"
        sub.mkdir(parents=True, exist_ok=True)
        images = torch.randint(0, 256, (min(PER_DIR, n - start), 3, SIZE, SIZE), dtype=torch.uint8, generator=gen)
        for k, image in enumerate(images):
            write_file(str(sub / f"{start + k:06d}.png"), encode_png(image))
    (root / ".complete").touch()
    return root


def child(n: int) -> None:
    """One measurement, in a fresh process: prints a JSON line with RSS figures (MB)."""
    import resource
    import time

    torch.set_num_threads(1)
    from lit_effdl.data.sources import loose_images_source
    from lit_effdl.data.views import ImagesOnlyView
    from lit_effdl.methods import Supervised
    from lit_effdl.pseudo_labels import make_pseudo_labels, predict_probs

    def rss_mb() -> float:
        with open("/proc/self/status") as handle:
            line = next(l for l in handle if l.startswith("VmRSS:"))
        return int(line.split()[1]) / 1024

    model = Supervised(backbone="small_cnn_w16", num_classes=10).eval()
    predict_probs(model, ImagesOnlyView(_TinySource()), batch_size=256)  # warm the code paths
    base = rss_mb()
    start = time.perf_counter()
    source = loose_images_source(image_dir(n), [str(c) for c in range(10)], SIZE, 3)
    predictions = predict_probs(model, ImagesOnlyView(source), batch_size=256)
    labels = make_pseudo_labels(predictions, "bench", min_confidence=0.0)
    del predictions
    assert len(labels.index) == n
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"n": n, "base_mb": base, "peak_mb": peak, "end_mb": rss_mb(),
                      "seconds": time.perf_counter() - start}))


class _TinySource:
    """A few in-memory images: a warm-up pass before the baseline RSS is read."""

    def __len__(self) -> int:
        return 256

    def load(self, i: int) -> torch.Tensor:
        return torch.zeros(3, SIZE, SIZE, dtype=torch.uint8)


def _measure(n: int) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                       os.environ.get("PYTHONPATH", "")]))
    code = f"from benchmarks.memory import child; child({n})"
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(args) -> dict:
    quick = getattr(args, "quick", False)
    small, large = (1000, 10000) if quick else (10000, 100000)
    repeats = getattr(args, "repeats", None) or (1 if quick else 3)
    for n in (small, large):
        ensure_images(n)
    runs: dict[int, list[dict]] = {small: [], large: []}
    for _ in range(repeats):
        for n in (small, large):
            runs[n].append(_measure(n))
    peak = {n: statistics.median(r["peak_mb"] for r in rs) for n, rs in runs.items()}
    base = {n: statistics.median(r["base_mb"] for r in rs) for n, rs in runs.items()}
    secs = {n: statistics.median(r["seconds"] for r in rs) for n, rs in runs.items()}
    result = {
        "small_n": small, "large_n": large,
        "peak_rss_small_mb": round(peak[small], 1), "peak_rss_large_mb": round(peak[large], 1),
        "rss_after_imports_mb": round(base[small], 1),
        "rss_growth_mb": round(peak[large] - peak[small], 1),
        "seconds_small": round(secs[small], 2), "seconds_large": round(secs[large], 2),
        "repeats": repeats,
    }
    print_table(f"pseudo-labeling peak RSS, {SIZE}x{SIZE} PNG folder, small_cnn_w16, 1 thread", [
        (f"{small} images", f"{peak[small]:8.1f} MB peak  ({secs[small]:.1f} s)"),
        (f"{large} images", f"{peak[large]:8.1f} MB peak  ({secs[large]:.1f} s)"),
        ("rss_growth_mb", f"{result['rss_growth_mb']:8.1f} MB  (target <= 64)"),
    ])
    return result
