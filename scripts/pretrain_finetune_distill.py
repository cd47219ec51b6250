#!/usr/bin/env python
"""SimCLRv2 as one command: pretrain without labels, fine-tune on the few labels, distill on the pool.

Chen, Kornblith, Swersky, Norouzi & Hinton 2020, "Big Self-Supervised Models are Strong
Semi-Supervised Learners" (https://arxiv.org/abs/2006.10029), beside its baselines::

    python scripts/pretrain_finetune_distill.py --dataset mnist --labels-per-class 1,10 --seeds 0,1,2 --jobs 2
    python scripts/pretrain_finetune_distill.py --quick        (smoke run: digits, one seed, a few steps per fit)

For each labels per class L and seed S, one folder per stage under ``OUT/<dataset>_<L>lpc_seed<S>/``:

1. ``simclr``: SimCLR on the unlabeled pool, labels unused (``configs/<dataset>/simclr.yaml``). One
   run per (L, S), not one per seed: the pool is the train images less the L per class labeled and the
   validation share, both drawn by the seed, so it changes with L; this keeps the labeled and the
   validation images out of pretraining for every budget, as the configs do.
2. ``simclr_linear``: a linear probe of the SimCLR backbone on the labels
   (``configs/<dataset>/simclr_finetune.yaml``, mode ``linear_probe``, ``checkpoint_path`` = its last.ckpt);
3. ``simclr_finetune``: the whole network fine-tuned from it (the same config, mode ``full``: LP-FT);
4. ``simclr_finetune_distill``: the fine-tuned network of 3 (its last.ckpt, EMA weights) teaches a
   student, by default the same network (SimCLRv2's self-distillation), on the labels and the
   unlabeled pool (digits: ``configs/digits/distill.yaml``; mnist: ``configs/mnist/simclr_distill.yaml``);
5. baselines: ``scratch`` (the labels alone), ``fixmatch_scratch`` (``configs/<dataset>/fixmatch.yaml``)
   and ``fixmatch_from_simclr`` (the same, ``model.init_args.init_from`` = SimCLR's last.ckpt).

Every stage trains the small CNN with seed and split seed S and budget L, and tests its final
weights (``--test_checkpoint last``, EMA where on) on the official test split. A stage folder holds
its logs, checkpoints and ``result.json`` (written last, atomically: ``lit_effdl.resumable``); a rerun
reuses every stage whose settings (config text, overrides, the checkpoints it reads) are unchanged, so
a changed setting reruns that stage and the ones after it. Prints a table (pipeline x labels per class,
mean ± std over seeds), writes ``OUT/results.json``; the last stdout line is the JSON
``{"results": [{"pipeline", "labels_per_class", "seed", "test_acc"}, ...], "seconds", "stages_run",
"stages_reused"}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from hinton_mnist import count_test_images  # one message when the MNIST files are missing
from label_efficiency import markdown_table, summarise  # the table of scripts/label_efficiency.py
from lit_effdl.errors import UserError
from lit_effdl.experiment import results_in_order
from lit_effdl.io import write_json_atomic
from lit_effdl.resumable import fit_once

ROOT = Path(__file__).resolve().parent.parent
DATASETS = ("digits", "mnist")
PIPELINES = ("simclr_linear", "simclr_finetune", "simclr_finetune_distill", "scratch", "fixmatch_scratch",
             "fixmatch_from_simclr")
NEEDS = {"simclr_linear": ("simclr",), "simclr_finetune": ("simclr",), "fixmatch_from_simclr": ("simclr",),
         "simclr_finetune_distill": ("simclr_finetune",)}  # the stages whose checkpoint a stage reads
CONFIGS = {  # stage -> config under configs/<dataset>/ (a dict: per dataset)
    "simclr": "simclr.yaml",
    "simclr_linear": "simclr_finetune.yaml",
    "simclr_finetune": "simclr_finetune.yaml",
    "simclr_finetune_distill": {"digits": "distill.yaml", "mnist": "simclr_distill.yaml"},
    "scratch": {"digits": "supervised_16px.yaml", "mnist": "supervised_cnn.yaml"},
    "fixmatch_scratch": "fixmatch.yaml",
    "fixmatch_from_simclr": "fixmatch.yaml",
}
BACKBONE = "small_cnn"  # every stage's network (the distillation's teacher); the student: --student-backbone
QUICK = ["--trainer.max_epochs", "3", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
         "--trainer.check_val_every_n_epoch", "3", "--trainer.num_sanity_val_steps", "0"]  # validation: at the end


def int_list(option: str, low: int):
    """An argparse type: comma-separated integers >= ``low``; the error names the value and ``option``."""
    def parse(text: str) -> list[int]:
        try:
            values = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            values = []
        if not values or min(values) < low:
            raise argparse.ArgumentTypeError(f"'{text}' is not valid for {option}: use integers >= {low}, "
                                             "comma-separated (e.g. 1,10)")
        return list(dict.fromkeys(values))
    return parse


def pipeline_names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in PIPELINES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"'{text}' is not valid for --pipelines: choose from {', '.join(PIPELINES)}")
    return names


def stages_for(pipelines: list[str]) -> list[str]:
    """The stages to run: the pipelines' and those their checkpoints come from, dependencies first."""
    order: list[str] = []

    def add(stage: str) -> None:
        for need in NEEDS.get(stage, ()):
            add(need)
        if stage not in order:
            order.append(stage)
    for pipeline in pipelines:
        add(pipeline)
    return order


def depth(stage: str) -> int:
    """0 for a stage that reads no other stage's checkpoint; stages of one depth run side by side."""
    return 1 + max((depth(need) for need in NEEDS.get(stage, ())), default=-1)


class Plan:
    """Each stage's config, overrides and folder for one (labels per class, seed)."""

    def __init__(self, args: argparse.Namespace):
        self.args, self.out = args, Path(args.out)

    def folder(self, labels: int, seed: int) -> Path:
        return self.out / f"{self.args.dataset}_{labels}lpc_seed{seed}"

    def call(self, stage: str, labels: int, seed: int, checkpoints: dict[str, str]) -> tuple:
        """``fit_once``'s arguments; ``checkpoints``: stage -> checkpoint of the stages already done."""
        name = CONFIGS[stage] if isinstance(CONFIGS[stage], str) else CONFIGS[stage][self.args.dataset]
        overrides = ["--seed_everything", str(seed), "--data.init_args.split_seed", str(seed),
                     "--data.init_args.num_labels_per_class", str(labels), "--test_checkpoint", "last"]
        if self.args.dataset == "mnist":
            overrides += ["--data.init_args.root", self.args.root]
        if stage == "simclr_finetune_distill":
            overrides += ["--model.init_args.backbone", self.args.student_backbone or BACKBONE,
                          "--model.init_args.teacher_backbone", BACKBONE,
                          "--model.init_args.teacher_checkpoint", checkpoints["simclr_finetune"]]
        else:
            overrides += ["--model.init_args.backbone", BACKBONE]
        if stage in ("simclr_linear", "simclr_finetune"):
            overrides += ["--model.init_args.mode", "linear_probe" if stage == "simclr_linear" else "full",
                          "--model.init_args.checkpoint_path", checkpoints["simclr"]]
        if stage == "fixmatch_from_simclr":
            overrides += ["--model.init_args.init_from", checkpoints["simclr"]]
        overrides += QUICK if self.args.quick else []
        config = str(ROOT / "configs" / self.args.dataset / name)
        return config, overrides, str(self.folder(labels, seed) / stage), stage != "simclr"


def run_stages(plan: Plan, stages: list[str], labels: list[int], seeds: list[int], jobs: int) -> dict:
    """Every stage of every (labels, seed), a depth at a time, ``jobs`` fits at a time; (stage, L, S) -> record."""
    done: dict[tuple, dict] = {}
    for level in sorted({depth(s) for s in stages}):
        keys = [(s, k, seed) for k in labels for seed in seeds for s in stages if depth(s) == level]
        calls = [plan.call(s, k, seed, {need: done[(need, k, seed)]["checkpoint"] for need in NEEDS.get(s, ())})
                 for s, k, seed in keys]
        for key, record in zip(keys, results_in_order(fit_once, calls, jobs)):
            done[key] = record
            acc = "" if record["test_acc"] is None else f"test/acc {record['test_acc']:.4f}"
            how = "reused" if record["reused"] else f"{record['seconds']:.0f} s"
            print(f"{key[0]:<24} labels/class={key[1]} seed={key[2]}: {acc} ({how})", flush=True)
    return done


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=DATASETS, default="digits")
    p.add_argument("--labels-per-class", type=int_list("--labels-per-class", 1), default=[5])
    p.add_argument("--seeds", type=int_list("--seeds", 0), default=[0, 1, 2])
    p.add_argument("--pipelines", type=pipeline_names, default=list(PIPELINES),
                   help="comma-separated subset (their stages run with those they start from)")
    p.add_argument("--student-backbone", default=None, help=f"the distilled student (default: {BACKBONE}, the teacher's)")
    p.add_argument("--root", default="data/mnist", help="mnist: the folder of mnist.pkl.gz (make data)")
    p.add_argument("--out", default="runs/simclrv2")
    p.add_argument("--jobs", type=int, default=1, help="fits at a time, one thread each (2 on 2 cores)")
    p.add_argument("--quick", action="store_true", help="smoke run: digits, the first seed, 3 epochs of 2 steps per fit")
    args = p.parse_args(argv)
    if args.quick:
        args.dataset, args.seeds = "digits", args.seeds[:1]
    start = time.time()
    if args.dataset == "mnist" and count_test_images(args.root, "pretrain_finetune_distill") is None:
        return 2
    stages = stages_for(args.pipelines)
    print(f"{args.dataset}: labels per class {args.labels_per_class}, seeds {args.seeds}; stages {', '.join(stages)}; "
          f"{args.jobs} job(s)", flush=True)
    try:
        done = run_stages(Plan(args), stages, args.labels_per_class, args.seeds, args.jobs)
    except UserError as err:
        print(f"pretrain_finetune_distill: error: {err}", file=sys.stderr)
        return 2
    results = [{"pipeline": s, "labels_per_class": k, "seed": seed, "test_acc": r["test_acc"]}
               for (s, k, seed), r in done.items() if s in PIPELINES]
    reported = [s for s in PIPELINES if s in stages]
    summary = summarise([{**r, "method": r["pipeline"]} for r in results])
    print(f"\n{args.dataset}: test accuracy, final weights (mean ± std over seeds {', '.join(map(str, args.seeds))})")
    print(markdown_table(summary, reported, [str(k) for k in args.labels_per_class]).replace("| method |", "| pipeline |"))
    reused = sum(r["reused"] for r in done.values())
    payload = {"results": results, "seconds": round(time.time() - start), "stages_run": len(done) - reused,
               "stages_reused": reused}
    write_json_atomic(Path(args.out) / "results.json", {**payload, "dataset": args.dataset, "quick": args.quick,
                                                        "summary": summary})
    print(json.dumps(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
