"""Test accuracy against labels per class, for several methods and seeds.

    python scripts/label_efficiency.py --dataset digits --labels-per-class 2,5,10,all \\
        --methods supervised,pseudo_label,fixmatch,noisy_student --seeds 0,1,2 --jobs 2

Every (method, labels per class, seed) trains the method's config (``configs/<dataset>/<method>.yaml``;
the supervised baseline: ``configs/digits/supervised_16px.yaml``, FixMatch's images, network and
steps) with the label split and the seed both set to the seed, and tests one protocol for every method
(``--test-checkpoint``, default ``last``: the final weights, EMA where on, as the FixMatch paper
reports; ``best`` picks the best val/acc epoch, on a validation set of labels the method never
trains on). Prints a markdown table (mean +- std of test accuracy), writes ``label_efficiency.json`` and ``label_efficiency.png`` in ``--out``; the last stdout line is
the JSON ``{"results": [{"method", "labels_per_class", "seed", "test_acc", "seconds"}, ...]}``.
With ``all`` labels there is no unlabeled image: semi-supervised methods are skipped there.
Finished runs are kept in ``--out/runs.jsonl`` and not redone when the command is run again
(a run is keyed by its settings and its config file's fingerprint: edit the config, it runs anew).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

from lit_effdl.errors import UserError
from lit_effdl.experiment import results_in_order, run_fit
from lit_effdl.io import write_json_atomic
from lit_effdl.rounds import config_files, is_rounds_config, run_rounds

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("supervised", "pseudo_label", "fixmatch", "noisy_student")
# A config file other than configs/<dataset>/<method>.yaml (the supervised baseline sees the same
# images, backbone and image size as the other methods).
CONFIG_FILES = {("digits", "supervised"): "supervised_16px.yaml"}


def config_path(dataset: str, method: str) -> Path:
    path = ROOT / "configs" / dataset / CONFIG_FILES.get((dataset, method), f"{method}.yaml")
    if not path.exists():
        raise UserError(f"no config {path}: methods with configs are {', '.join(METHODS)}")
    return path


def config_fingerprint(dataset: str, method: str) -> str:
    """8 hex digits of the config file (a rounds recipe: and every config it names): a changed recipe
    is a new run."""
    path = config_path(dataset, method)
    files = config_files(path) if is_rounds_config(path) else [path]
    return hashlib.sha1(b"".join(f.read_bytes() for f in files)).hexdigest()[:8]


def run_one(dataset: str, method: str, labels: int | None, seed: int, out: Path, extra: list[str],
            test_checkpoint: str = "last", fingerprint: str | None = None) -> float:
    """One fit (or one rounds run) in ``out/<method>/lpc<labels>/seed<seed>-<test_checkpoint>-<fingerprint>``."""
    config = str(config_path(dataset, method))
    overrides = ["--seed_everything", str(seed), "--data.init_args.split_seed", str(seed),
                 "--data.init_args.num_labels_per_class", "null" if labels is None else str(labels),
                 "--test_checkpoint", test_checkpoint, *extra]
    fingerprint = fingerprint or config_fingerprint(dataset, method)
    run_dir = out / method / f"lpc{labels or 'all'}" / f"seed{seed}-{test_checkpoint}-{fingerprint}"
    if extra:  # other settings, other folder (the rounds driver resumes whatever it finds there)
        run_dir = run_dir.with_name(run_dir.name + "_" + hashlib.sha1(" ".join(extra).encode()).hexdigest()[:8])
    if is_rounds_config(config):  # teacher then student(s): the rounds driver
        return float(run_rounds(config, run_dir, overrides)[-1]["test_acc"])
    return run_fit(config, overrides, run_dir)["test_acc"]


def summarise(results: list[dict]) -> list[dict]:
    rows = {}
    for r in results:
        rows.setdefault((r["method"], r["labels_per_class"]), []).append(r["test_acc"])
    return [{"method": m, "labels_per_class": k, "mean": statistics.mean(v),
             "std": statistics.pstdev(v) if len(v) > 1 else 0.0, "n": len(v)} for (m, k), v in rows.items()]


def markdown_table(summary: list[dict], methods: list[str], labels: list[str]) -> str:
    head = "| method | " + " | ".join(f"{k} labels/class" for k in labels) + " |"
    lines = [head, "|" + "---|" * (len(labels) + 1)]
    cell = {(s["method"], str(s["labels_per_class"])): s for s in summary}
    for m in methods:
        values = []
        for k in labels:
            s = cell.get((m, k))
            values.append("-" if s is None else f"{s['mean']:.3f} ± {s['std']:.3f} (n={s['n']})")
        lines.append(f"| {m} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def plot(summary: list[dict], methods: list[str], path: Path, dataset: str, xlabel: str = "labels per class",
         title: str = "label efficiency") -> None:
    """One line per method (mean +- std over seeds) against ``labels_per_class`` (log axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for m in methods:
        pts = sorted((s for s in summary if s["method"] == m and s["labels_per_class"] != "all"),
                     key=lambda s: s["labels_per_class"])
        if pts:
            ax.errorbar([s["labels_per_class"] for s in pts], [s["mean"] for s in pts],
                        yerr=[s["std"] for s in pts], marker="o", capsize=3, label=m)
        full = [s for s in summary if s["method"] == m and s["labels_per_class"] == "all"]
        if full:
            ax.axhline(full[0]["mean"], linestyle="--", linewidth=1, color="grey", label=f"{m}, all labels")
    ax.set_xscale("log")
    ticks = sorted({s["labels_per_class"] for s in summary if s["labels_per_class"] != "all"})
    ax.set_xticks(ticks, [str(k) for k in ticks])
    ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{dataset}: {title}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _timed_run(dataset: str, key: dict, out: Path) -> tuple[float, float]:
    """One (method, labels per class, seed) fit: (test accuracy, seconds)."""
    start = time.perf_counter()
    labels = None if key["labels_per_class"] == "all" else key["labels_per_class"]
    acc = run_one(dataset, key["method"], labels, key["seed"], out, shlex.split(key["extra"]),
                  key["test_checkpoint"], key["config"])
    return acc, round(time.perf_counter() - start, 1)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="test accuracy vs labels per class")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--labels-per-class", default="2,5,10,all")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--out", default="runs/label_efficiency")
    p.add_argument("--jobs", type=int, default=1, help="fits run in parallel, one thread each (e.g. 2 on 2 cores)")
    p.add_argument("--extra", default="", help="lit-effdl overrides for every run, e.g. '--trainer.max_epochs 5' "
                   "(recorded in each result)")
    p.add_argument("--test-checkpoint", choices=("last", "best"), default="last",
                   help="the checkpoint tested, the same for every method: final weights or best val/acc")
    args = p.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    labels = [k.strip() for k in args.labels_per_class.split(",") if k.strip()]
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
        for k in labels:
            if k != "all" and int(k) < 1:
                raise ValueError
    except ValueError:
        print(f"label_efficiency: error: --labels-per-class '{args.labels_per_class}' / --seeds "
              f"'{args.seeds}': use positive integers (and 'all')", file=sys.stderr)
        sys.exit(2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    done_file = out / "runs.jsonl"
    done = [json.loads(line) for line in done_file.read_text().splitlines()] if done_file.exists() else []
    results, pending = [], []
    try:
        fingerprints = {m: config_fingerprint(args.dataset, m) for m in methods}
    except UserError as err:
        print(f"label_efficiency: error: {err}", file=sys.stderr)
        sys.exit(2)
    for m in methods:
        for k in labels:
            if k == "all" and m != "supervised":
                continue
            for s in seeds:
                key = {"method": m, "labels_per_class": k if k == "all" else int(k), "seed": s, "extra": args.extra,
                       "test_checkpoint": args.test_checkpoint, "config": fingerprints[m]}
                prior = [d for d in done if all(d.get(a) == b for a, b in key.items())
                         and d.get("dataset", args.dataset) == args.dataset]
                if prior:
                    results.append(prior[-1])
                else:
                    pending.append(key)
    runs = results_in_order(_timed_run, [(args.dataset, key, out) for key in pending], args.jobs)
    for key in pending:
        try:
            acc, seconds = next(runs)
        except UserError as err:
            print(f"label_efficiency: error: {err}", file=sys.stderr)
            sys.exit(2)
        row = {**key, "test_acc": acc, "seconds": seconds, "dataset": args.dataset}
        results.append(row)
        with done_file.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{key['method']} labels/class={key['labels_per_class']} seed={key['seed']}: "
              f"test/acc {acc:.4f} ({seconds} s)", flush=True)
    summary = summarise(results)
    print(markdown_table(summary, methods, labels))
    plot(summary, methods, out / "label_efficiency.png", args.dataset)
    payload = {"results": results, "summary": summary}
    write_json_atomic(out / "label_efficiency.json", payload)
    print(json.dumps(payload))


if __name__ == "__main__":
    main()
