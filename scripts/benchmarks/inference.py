"""Inference: this project's pseudo-labeling pass vs a plain ``eval()`` + ``inference_mode()`` loop.

Both sides, one process, one thread, the same trained-size ``small_cnn`` and the same unlabeled
set (synthetic 32x32 uint8 images in memory, read through ``ImagesOnlyView``) and batch size:
(a) ``lit_effdl.pseudo_labels.predict_probs`` (what PseudoLabel / NoisyStudent / Distill call),
then ``make_pseudo_labels`` (label, confidence, index); (b) a hand-written loop: DataLoader,
normalise, forward, softmax, concatenate, max. Rounds alternate a, b, a, b...
``inference_ratio`` = median plain wall time / median lit-effdl wall time (1.0 = no overhead);
``cpu_time_ratio`` the same with process CPU time (steadier when other jobs share the cores).
"""

from __future__ import annotations


import lightning as L
import torch
from torch.utils.data import DataLoader

from benchmarks._fit import timed
from benchmarks._timing import alternating, print_table, ratios


def run(args) -> dict:
    torch.set_num_threads(1)
    from lit_effdl.data.sources import synthetic_images
    from lit_effdl.data.views import ImagesOnlyView
    from lit_effdl.methods import Supervised
    from lit_effdl.pseudo_labels import make_pseudo_labels, predict_probs

    quick = getattr(args, "quick", False)
    repeats = getattr(args, "repeats", None) or (2 if quick else 7)
    n, batch_size = (1024, 256) if quick else (2048, 256)
    dataset = ImagesOnlyView(synthetic_images(n, 10, 32, 3, seed=0))
    L.seed_everything(0, verbose=False)
    model = Supervised(backbone="small_cnn", num_classes=10)
    net, mean, std = model.backbone, model.input_mean, model.input_std

    def ours() -> torch.Tensor:
        labels = make_pseudo_labels(predict_probs(model, dataset, batch_size=batch_size), "bench")
        return labels.confidence

    def plain() -> torch.Tensor:
        net.eval()
        probs = []
        with torch.inference_mode():
            for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
                x = (batch["image"].float().div_(255.0) - mean) / std
                probs.append(net(x).softmax(dim=-1))
            confidence, labels = torch.cat(probs).max(dim=-1)
        return confidence

    torch.testing.assert_close(ours(), plain())  # same work, same answer
    times, med, med_cpu = alternating({"lit": lambda: timed(ours), "plain": lambda: timed(plain)}, repeats)
    ratio, cpu_ratio, paired = ratios(times, med, med_cpu, "plain", "lit")
    result = {
        "inference_ratio": ratio, "cpu_time_ratio": cpu_ratio, "paired_ratio_median": paired,
        "lit_s": round(med["lit"], 3), "plain_s": round(med["plain"], 3),
        "images": n, "batch_size": batch_size, "backbone": "small_cnn", "threads": 1, "repeats": repeats,
    }
    print_table(f"pseudo-labeling pass over {n} images (small_cnn, 32x32, batch {batch_size}, 1 thread)", [
        ("predict_probs + make_pseudo_labels", f"{med['lit']:8.3f} s  ({n / med['lit']:.0f} images/s)"),
        ("plain eval + inference_mode loop", f"{med['plain']:8.3f} s  ({n / med['plain']:.0f} images/s)"),
        ("inference_ratio", f"{result['inference_ratio']:8.4f}  (target >= 0.95)"),
        ("cpu_time_ratio", f"{result['cpu_time_ratio']:8.4f}"),
    ])
    return result
