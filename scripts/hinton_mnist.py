#!/usr/bin/env python
"""Hinton, Vinyals & Dean 2015, section 3 (MNIST): teacher, student alone, distilled student, temperatures.

1. the teacher, a 784-1200-1200-10 ReLU MLP with dropout (inputs 0.1, hidden 0.3), max-norm 3.5 and
   inputs jittered by up to 2 pixels (``configs/mnist/teacher.yaml``), one per seed;
2. the student, 784-800-800-10, no regularization, alone (``configs/mnist/supervised.yaml``), per seed;
3. the same student distilled from the teacher of its seed at T = 20 (``configs/mnist/distill.yaml``:
   alpha 0.5, chosen on validation by ``scripts/hinton_kd_validation.py``; un-jittered inputs, so the
   teacher's logits are computed once and cached), per seed;
4. a temperature sweep (T in 1, 2.5, 4, 8, 20; seed 0, teacher of seed 0) for a 784-30-30-10 student
   and the 800-unit one, with each width trained alone for reference.

Every fit goes through the ``lit-effdl`` configs (``run_fit``): 60,000 training images less a 1%
validation split (``split_seed`` = the seed), the final weights tested on the official 10,000.
Schedules are far shorter than the paper's (``--teacher-epochs``, ``--student-epochs``; SGD with
Nesterov momentum, cosine to 0). Prints test errors out of 10,000 beside the paper's; the last
stdout line is JSON ``{"teacher_errors", "student_alone_errors", "kd_errors", "sweep": {"30": {T: errors},
"800": {...}}, "seconds"}`` (headline rows: mean over ``--seeds``). Finished fits are kept in
``OUT/<run>/result.json`` and reused by a rerun with the same settings.

    make data && python scripts/hinton_mnist.py --jobs 2          (two fits at a time, one thread each)
    python scripts/hinton_mnist.py --quick --root DIR               (smoke run: one seed, two steps per fit)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from lit_effdl.data.mnist import mnist_sources
from lit_effdl.errors import UserError
from lit_effdl.experiment import results_in_order
from lit_effdl.io import write_json_atomic
from lit_effdl.resumable import fit_once as fit  # resumable fits; also imported by the sibling scripts

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs" / "mnist"
TEMPERATURES = (1, 2.5, 4, 8, 20)
HEADLINE_T = 20
WIDTHS = (30, 800)
PAPER = {"teacher": 67, "student_alone": 146, "kd": 74}
QUICK = ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
         "--trainer.num_sanity_val_steps", "0", "--data.init_args.val_fraction", "0.2"]


def tag(t: float) -> str:
    return f"{t:g}"


class Plan:
    """The fits of the experiment, named, with their configs and overrides."""

    def __init__(self, args: argparse.Namespace):
        self.args, self.out = args, Path(args.out)

    def common(self, seed: int, epochs: int) -> list[str]:
        quick = QUICK if self.args.quick else []
        return ["--seed_everything", str(seed), "--data.init_args.split_seed", str(seed), "--data.init_args.root",
                self.args.root, "--trainer.max_epochs", str(epochs), "--test_checkpoint", "last", *quick]

    def teacher(self, seed: int) -> tuple:
        return (str(CONFIGS / "teacher.yaml"), self.common(seed, self.args.teacher_epochs),
                str(self.out / f"teacher_seed{seed}"))

    def alone(self, width: int, seed: int) -> tuple:
        return (str(CONFIGS / "supervised.yaml"), self.common(seed, self.args.student_epochs)
                + ["--model.init_args.backbone", f"mlp_{width}_{width}"], str(self.out / f"alone{width}_seed{seed}"))

    def kd(self, width: int, t: float, seed: int, teacher: str) -> tuple:
        return (str(CONFIGS / "distill.yaml"), self.common(seed, self.args.student_epochs)
                + ["--model.init_args.backbone", f"mlp_{width}_{width}", "--model.init_args.temperature", tag(t),
                   "--model.init_args.teacher_checkpoint", teacher], str(self.out / f"kd{width}_T{tag(t)}_seed{seed}"))


def run_named(calls: dict[str, tuple], jobs: int, errors, start: float) -> dict[str, int]:
    """Run every fit (``jobs`` at a time), print each as it finishes; name -> test errors."""
    results = {}
    for name, record in zip(calls, results_in_order(fit, list(calls.values()), jobs)):
        results[name] = record
        print(f"{name:<18} {errors(record['test_acc']):>6} test errors  ({record['seconds']:.0f} s fit, "
              f"{time.time() - start:.0f} s total)", flush=True)
    return results


def count_test_images(root: str, prog: str) -> int | None:
    """The number of test images of the MNIST files under ``root``; None, after one message, when unreadable."""
    try:
        return len(mnist_sources(root)[1])
    except UserError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the three headline rows")
    p.add_argument("--teacher-epochs", type=int, default=40)
    p.add_argument("--student-epochs", type=int, default=15, help="every student fit (alone and distilled)")
    p.add_argument("--root", default="data/mnist", help="MNIST folder (make data) or torchvision's layout")
    p.add_argument("--out", default="runs/hinton_mnist")
    p.add_argument("--jobs", type=int, default=1, help="fits at a time, one thread each (2 on 2 cores)")
    p.add_argument("--quick", action="store_true", help="smoke run: seed 0, 1 epoch of 2 steps per fit")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.teacher_epochs, args.student_epochs = [0], 1, 1
    start = time.time()
    n_test = count_test_images(args.root, "hinton_mnist")
    if n_test is None:
        return 2
    errors = lambda acc: round((1.0 - acc) * n_test)
    plan, seeds, first = Plan(args), args.seeds, args.seeds[0]
    print(f"MNIST from {args.root}: {n_test} test images; seeds {seeds}; teacher {args.teacher_epochs} epochs, "
          f"students {args.student_epochs} epochs; {args.jobs} job(s)", flush=True)
    # Three phases keep both jobs busy: (1) every teacher but the last seed's; (2) the last teacher beside
    # the students alone and the distillations from the teachers already trained; (3) the rest.
    last = seeds[-1]
    done = run_named({f"teacher_seed{s}": plan.teacher(s) for s in seeds if s != last}, args.jobs, errors, start)
    kd_runs = [(800, HEADLINE_T, s) for s in seeds] + [(w, t, first) for w in WIDTHS for t in TEMPERATURES]
    kd_runs = list(dict.fromkeys(kd_runs))  # the headline run of the first seed is also in the sweep
    kd_name = lambda w, t, s: f"kd{w}_T{tag(t)}_seed{s}"
    teachers = {s: done[f"teacher_seed{s}"]["checkpoint"] for s in seeds if s != last}
    phase2 = {f"teacher_seed{last}": plan.teacher(last)}
    phase2 |= {f"alone800_seed{s}": plan.alone(800, s) for s in seeds} | {f"alone30_seed{first}": plan.alone(30, first)}
    phase2 |= {kd_name(w, t, s): plan.kd(w, t, s, teachers[s]) for w, t, s in kd_runs if s != last}
    done |= run_named(phase2, args.jobs, errors, start)
    teachers[last] = done[f"teacher_seed{last}"]["checkpoint"]
    done |= run_named({kd_name(w, t, s): plan.kd(w, t, s, teachers[s]) for w, t, s in kd_runs if s == last},
                      args.jobs, errors, start)
    err = {name: errors(record["test_acc"]) for name, record in done.items()}
    rows = {"teacher": [err[f"teacher_seed{s}"] for s in seeds],
            "student_alone": [err[f"alone800_seed{s}"] for s in seeds],
            "kd": [err[f"kd800_T{HEADLINE_T}_seed{s}"] for s in seeds]}
    mean = {row: statistics.mean(values) for row, values in rows.items()}
    sweep = {str(w): {tag(t): err[f"kd{w}_T{tag(t)}_seed{first}"] for t in TEMPERATURES} for w in WIDTHS}
    report(rows, mean, sweep, {w: err[f"alone{w}_seed{first}"] for w in WIDTHS}, seeds, n_test)
    seconds = round(time.time() - start)
    summary = {"teacher_errors": round(mean["teacher"], 1), "student_alone_errors": round(mean["student_alone"], 1),
               "kd_errors": round(mean["kd"], 1), "sweep": sweep, "seconds": seconds}
    write_json_atomic(Path(args.out) / "results.json", {**summary, "per_seed": rows, "seeds": seeds,
                                                        "alone_seed0": {"30": err[f"alone30_seed{first}"]},
                                                        "epochs": [args.teacher_epochs, args.student_epochs]})
    print(f"total {seconds} s")
    print(json.dumps(summary))
    return 0


def report(rows: dict, mean: dict, sweep: dict, alone: dict, seeds: list[int], n_test: int) -> None:
    """The headline table beside the paper's and the temperature sweep."""
    names = {"teacher": "teacher 784-1200-1200-10 (dropout, max-norm, jitter)",
             "student_alone": "student 784-800-800-10 alone",
             "kd": f"student 784-800-800-10 distilled, T = {HEADLINE_T}"}
    print(f"\nMNIST test errors out of {n_test} (mean over seeds {', '.join(map(str, seeds))}; per seed)")
    print(f"| {'network':<52} | ours (mean) | per seed | paper |\n|---|---|---|---|")
    for row, name in names.items():
        print(f"| {name:<52} | {mean[row]:11.1f} | {' '.join(map(str, rows[row])):>8} | {PAPER[row]:>5} |")
    gap = mean["student_alone"] - mean["teacher"]
    closed = (mean["student_alone"] - mean["kd"]) / gap if gap else float("nan")
    paper_closed = (PAPER["student_alone"] - PAPER["kd"]) / (PAPER["student_alone"] - PAPER["teacher"])
    print(f"gap between student alone and teacher closed by distillation: {closed:.0%} (paper {paper_closed:.0%})")
    print(f"\ntemperature sweep, seed {seeds[0]} (test errors; 'alone': the same width without a teacher)")
    print("| units | alone | " + " | ".join(f"T = {t}" for t in sweep["800"]) + " |")
    print("|---" * (len(TEMPERATURES) + 2) + "|")
    for width, by_t in sweep.items():
        print(f"| {width} | {alone[int(width)]} | " + " | ".join(str(v) for v in by_t.values()) + " |")
    print("paper: with 300+ units all T above 8 give similar results; with 30 units T from 2.5 to 4 work "
          "clearly better than higher or lower T")


if __name__ == "__main__":
    sys.exit(main())
