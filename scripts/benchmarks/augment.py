"""Augmentation throughput on 32x32 uint8 images, one thread, all in one process.

(a) this project's per-image ``strong`` pipeline (flip + pad-crop + RandAugment n2 m10 + cutout);
(b) ``torchvision.transforms.v2.RandAugment(num_ops=2, magnitude=9)`` per image on tensors;
(c) timm's ``rand-m9-n2`` per image on PIL, tensor -> PIL -> tensor conversion counted;
(d) this project's batched ``strong`` path on batches of 256 on the CPU (full op list, per-sample
    parameters). Rounds interleave a-b-c-d so machine load hits all four alike; medians are reported.
"""

from __future__ import annotations

import statistics
import time

import torch

from benchmarks._timing import print_table


def _rate(fn, n_images: int) -> float:
    start = time.perf_counter()
    fn()
    return n_images / (time.perf_counter() - start)


def run(args) -> dict:
    torch.set_num_threads(1)
    from timm.data.auto_augment import rand_augment_transform
    from torchvision.transforms import v2
    from torchvision.transforms.v2 import functional as TF

    from lit_effdl.augment.batched import build_batched
    from lit_effdl.augment.pipelines import build_pipeline

    quick = getattr(args, "quick", False)
    repeats = getattr(args, "repeats", None) or (2 if quick else 5)
    n_single, batch = (128, 256) if quick else (512, 256)
    torch.manual_seed(0)
    images = torch.randint(0, 256, (max(n_single, batch), 3, 32, 32), dtype=torch.uint8)
    single, batched_in = images[:n_single], images[:batch]

    ours = build_pipeline("strong", 32)
    tv = v2.RandAugment(num_ops=2, magnitude=9)
    timm_ra = rand_augment_transform("rand-m9-n2", {"translate_const": int(32 * 0.45),
                                                    "img_mean": (124, 116, 104)})
    batched = build_batched("strong")

    cases = {
        "a_per_image_strong": (lambda: [ours(im) for im in single], n_single),
        "b_torchvision_randaugment": (lambda: [tv(im) for im in single], n_single),
        "c_timm_rand_m9_n2_pil": (lambda: [TF.pil_to_tensor(timm_ra(TF.to_pil_image(im))) for im in single],
                                  n_single),
        "d_batched_strong_b256": (lambda: [batched(batched_in) for _ in range(4)], 4 * batch),
    }
    for fn, n in cases.values():  # warm-up
        fn()
    rates: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(repeats):
        for key, (fn, n) in cases.items():
            rates[key].append(_rate(fn, n))
    med = {k: statistics.median(v) for k, v in rates.items()}
    result = {f"{k}_images_per_s": round(v, 1) for k, v in med.items()}
    result.update({
        "per_image_vs_torchvision": round(med["a_per_image_strong"] / med["b_torchvision_randaugment"], 3),
        "batched_vs_torchvision": round(med["d_batched_strong_b256"] / med["b_torchvision_randaugment"], 3),
        "batched_vs_timm": round(med["d_batched_strong_b256"] / med["c_timm_rand_m9_n2_pil"], 3),
        "threads": torch.get_num_threads(),
        "repeats": repeats,
    })
    rows = [(k, f"{v:10.0f} images/s") for k, v in med.items()]
    rows += [(k, f"{result[k]:.2f}x") for k in ("per_image_vs_torchvision", "batched_vs_torchvision",
                                                "batched_vs_timm")]
    print_table("augment throughput, 32x32 uint8, 1 thread", rows)
    return result
