"""Scale on real MNIST: pseudo-labeling the unlabeled pool and the teacher-logit cache, at 10% and 100%.

The pool is MNIST's 60,000 training images, 100 of them labeled; the unlabeled part is ~5,900 images
(``val_fraction`` 0.9) or ~59,900 (``val_fraction`` 0). Each measurement runs in a fresh Python
process (peak RSS is per process), one thread, after the data module is set up (the 60k uint8
images, 47 MB, are in memory in both cases):

- ``pseudo_label``: ``predict_probs`` over the unlabeled pool with the 784-800-800-10 MLP, then
  ``make_pseudo_labels`` (what ``OfflinePseudoLabel`` / ``NoisyStudent`` and the rounds driver run);
- ``logit_cache``: a ``Distill`` fit of one step with ``cache_teacher_logits`` (teacher
  ``mlp_800_800`` with random weights saved as its checkpoint: the cost is the same as a trained
  one's), whose cost is the teacher pass over the pool.

Reported per part: seconds and peak-RSS increase over the set-up data module, at both sizes;
``*_time_exponent`` = log(time ratio) / log(size ratio) (1.0: linear) and ``*_rss_growth_mb`` =
the increase at 100% minus the increase at 10%. Needs ``data/mnist`` (``make data``).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._timing import print_table

VAL_FRACTIONS = {"small": 0.9, "large": 0.0}
PARTS = ("pseudo_label", "logit_cache")


def child(part: str, val_fraction: float, root: str) -> None:
    """One measurement in a fresh process: prints a JSON line (seconds, MB, unlabeled count)."""
    import lightning as L
    import torch

    torch.set_num_threads(1)
    from lit_effdl.data import MNISTDataModule
    from lit_effdl.methods import Distill, Supervised
    from lit_effdl.models.factory import create_backbone
    from lit_effdl.pseudo_labels import make_pseudo_labels, predict_probs

    def status_mb(field: str) -> float:
        with open("/proc/self/status") as handle:
            return int(next(l for l in handle if l.startswith(field + ":")).split()[1]) / 1024

    dm = MNISTDataModule(root=root, num_labels_per_class=10, val_fraction=val_fraction, unlabeled_ratio=1,
                         batch_size=100, eval_batch_size=1000, labeled_augment="none",
                         unlabeled_weak_augment="none", unlabeled_strong_augment="none")
    dm.setup("fit")
    n = len(dm.inference_dataset("unlabeled"))
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # resets the peak (VmHWM): reading the pickle peaks higher than what follows
    base = status_mb("VmRSS")
    start = time.perf_counter()
    if part == "pseudo_label":
        model = Supervised(backbone="mlp_800_800", in_chans=1, num_classes=10)
        predictions = predict_probs(model, dm.inference_dataset("unlabeled"), batch_size=1000)
        labels = make_pseudo_labels(predictions, "bench", min_confidence=0.0)
        assert len(labels.index) == n
    else:
        with tempfile.TemporaryDirectory() as folder:
            torch.save(create_backbone("mlp_800_800", num_classes=10, in_chans=1).state_dict(), f"{folder}/t.pt")
            model = Distill(backbone="mlp_30_30", teacher_backbone="mlp_800_800", teacher_checkpoint=f"{folder}/t.pt",
                            in_chans=1, num_classes=10, cache_teacher_logits=True,
                            teacher_cache_file=f"{folder}/logits.pt")
            trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=1, limit_val_batches=0, logger=False,
                                enable_checkpointing=False, enable_progress_bar=False,
                                enable_model_summary=False, num_sanity_val_steps=0)
            trainer.fit(model, datamodule=dm)
    seconds = time.perf_counter() - start
    peak = status_mb("VmHWM")
    print(json.dumps({"n": n, "seconds": seconds, "rss_increase_mb": peak - base, "base_mb": base}))


def _measure(part: str, size: str, root: str) -> dict:
    here = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([here, os.environ.get("PYTHONPATH", "")]),
               PYTHONWARNINGS="ignore")
    code = f"from benchmarks.mnist_scale import child; child({part!r}, {VAL_FRACTIONS[size]}, {root!r})"
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(args) -> dict:
    from lit_effdl.data.mnist import mnist_sources

    root = os.environ.get("LIT_EFFDL_MNIST_ROOT", "data/mnist")
    mnist_sources(root)  # a missing file stops here with the command that gets it
    repeats = getattr(args, "repeats", None) or (1 if getattr(args, "quick", False) else 3)
    runs = {(p, s): [] for p in PARTS for s in VAL_FRACTIONS}
    for _ in range(repeats):  # sizes alternate so machine load hits both alike
        for key in runs:
            runs[key].append(_measure(*key, root))
    med = {k: {f: statistics.median(r[f] for r in v) for f in ("n", "seconds", "rss_increase_mb")}
           for k, v in runs.items()}
    result, rows = {"repeats": repeats, "threads": 1}, []
    for part in PARTS:
        small, large = med[(part, "small")], med[(part, "large")]
        exponent = math.log(large["seconds"] / small["seconds"]) / math.log(large["n"] / small["n"])
        growth = large["rss_increase_mb"] - small["rss_increase_mb"]
        result |= {f"{part}_n": [int(small["n"]), int(large["n"])],
                   f"{part}_seconds": [round(small["seconds"], 2), round(large["seconds"], 2)],
                   f"{part}_rss_increase_mb": [round(small["rss_increase_mb"], 1), round(large["rss_increase_mb"], 1)],
                   f"{part}_time_exponent": round(exponent, 3), f"{part}_rss_growth_mb": round(growth, 1)}
        rows += [(f"{part}, {int(s['n'])} unlabeled", f"{s['seconds']:7.2f} s  +{s['rss_increase_mb']:6.1f} MB peak")
                 for s in (small, large)]
        rows.append((f"{part}: time exponent, RSS growth", f"{exponent:7.3f}     {growth:6.1f} MB"))
    print_table("MNIST pool scale (1 thread; peak RSS over the set-up data module)", rows)
    return result
