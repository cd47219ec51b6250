"""Every shipped config trains a step and validates (``--trainer.fast_dev_run``): configs do not rot.
A rounds recipe runs every round for one step (``lit-effdl rounds``), which covers the configs it names.

CIFAR-10 and STL-10 read tiny files in the real formats; their batches are shrunk to keep the WRNs
quick on a CPU; MNIST reads a tiny ``mnist.pkl.gz``; a distillation config gets an untrained teacher
of its architecture (a plain state_dict).
"""

import json
from pathlib import Path

import pytest
import torch

from cli_runner import run_in_runner
from lit_effdl.models import create_backbone
from lit_effdl.rounds import config_files
from tiny_data import make_tiny_cifar10, make_tiny_mnist_pickle, make_tiny_stl10

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ONE_STEP = ["--trainer.fast_dev_run", "true", "--trainer.enable_progress_bar", "false", "--trainer.accelerator", "cpu",
            "--trainer.precision", "32-true"]
SMALL_BATCHES = ["--data.init_args.batch_size", "4", "--data.init_args.eval_batch_size", "8"]
MNIST_FEW_LABELS = ["--data.init_args.num_labels_per_class", "2"]  # the tiny pickle: 6 images per class
CASES = {
    "digits/supervised.yaml": [],
    "digits/supervised_16px.yaml": [],
    "digits/supervised_strong.yaml": [],
    "digits/fixmatch.yaml": [],
    "digits/flexmatch.yaml": [],
    "digits/freematch.yaml": [],
    "digits/pseudo_label_online.yaml": [],
    "digits/distill.yaml": ["--model.init_args.teacher_checkpoint", "../teacher.pt"],
    "digits/finetune_probe.yaml": [],
    "digits/finetune_lite0_probe.yaml": [],
    "digits/finetune_lite0_full.yaml": [],
    "digits/simclr.yaml": [],
    "digits/simclr_finetune.yaml": [],
    "cifar10/fixmatch_4000.yaml": ["--data.init_args.num_labels", "20", *SMALL_BATCHES],
    "mnist/supervised.yaml": [],
    "mnist/teacher.yaml": [],
    "mnist/fixmatch.yaml": MNIST_FEW_LABELS,
    "mnist/flexmatch.yaml": MNIST_FEW_LABELS,
    "mnist/freematch.yaml": MNIST_FEW_LABELS,
    "mnist/distill.yaml": ["--model.init_args.teacher_checkpoint", "../mnist_teacher.pt"],
    "mnist/simclr.yaml": MNIST_FEW_LABELS,
    "mnist/simclr_finetune.yaml": MNIST_FEW_LABELS,
    "mnist/simclr_distill.yaml": [*MNIST_FEW_LABELS, "--model.init_args.teacher_checkpoint", "../mnist_cnn_teacher.pt"],
    "mnist/supervised_cnn.yaml": MNIST_FEW_LABELS,
    "mnist/lee2013_supervised.yaml": ["--data.init_args.num_labels", "20"],
    "mnist/lee2013_pseudo_label.yaml": ["--data.init_args.num_labels", "20"],
}
ROUND_STEP = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1",
              "--trainer.limit_test_batches", "1", "--trainer.enable_progress_bar", "false",
              "--trainer.accelerator", "cpu", "--trainer.precision", "32-true"]
RECIPES = {  # rounds recipe: (extra arguments, number of rounds)
    "digits/pseudo_label.yaml": ([], 2),
    "digits/noisy_student.yaml": ([], 3),
    "stl10/noisy_student.yaml": ([*SMALL_BATCHES, "--data.init_args.unlabeled_ratio", "1",
                                  "--model.init_args.backbone", "wrn_28_2"], 3),  # WRN-28-8 at 96x96: minutes
}


def test_every_shipped_config_has_a_case():
    shipped = {str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.yaml")}
    in_recipes = {str(p.relative_to(CONFIGS)) for recipe in RECIPES for p in config_files(CONFIGS / recipe)}
    assert shipped == set(CASES) | in_recipes, "a new config needs a case here"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("configs")
    make_tiny_cifar10(root / "data")
    make_tiny_stl10(root / "data")
    (root / "data" / "mnist").mkdir()
    make_tiny_mnist_pickle(root / "data" / "mnist" / "mnist.pkl.gz")
    torch.save(create_backbone("small_cnn_w64", num_classes=10, in_chans=1).state_dict(), root / "teacher.pt")
    torch.save(create_backbone("mlp_1200_1200", num_classes=10, in_chans=1).state_dict(), root / "mnist_teacher.pt")
    torch.save(create_backbone("small_cnn", num_classes=10, in_chans=1).state_dict(), root / "mnist_cnn_teacher.pt")
    cases = []
    for i, (config, extra) in enumerate(CASES.items()):
        (root / str(i)).mkdir()
        (root / str(i) / "data").symlink_to(root / "data")  # the configs read root: data
        cases.append({"args": ["fit", "--config", str(CONFIGS / config), *ONE_STEP, *extra], "cwd": str(root / str(i))})
    for recipe, (extra, _) in RECIPES.items():
        cwd = root / recipe.replace("/", "_")
        cwd.mkdir()
        (cwd / "data").symlink_to(root / "data")
        cases.append({"args": ["rounds", "--config", str(CONFIGS / recipe), "--out", "out", *ROUND_STEP, *extra],
                      "cwd": str(cwd)})
    return dict(zip([*CASES, *RECIPES], run_in_runner(cases, root))), root


@pytest.mark.parametrize("config", list(CASES))
def test_shipped_config_trains_a_step(results, config):
    result = results[0][config]
    assert result["returncode"] == 0, f"{config}:\n{result['stderr'][-3000:]}"
    assert "Traceback" not in result["stderr"], result["stderr"][-3000:]
    assert "`Trainer.fit` stopped: `max_steps=1` reached" in result["stdout"] + result["stderr"]


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_shipped_recipe_trains_a_step_in_every_round(results, recipe):
    result, out = results[0][recipe], results[1] / recipe.replace("/", "_") / "out"
    assert result["returncode"] == 0, f"{recipe}:\n{result['stderr'][-3000:]}"
    assert "Traceback" not in result["stderr"], result["stderr"][-3000:]
    metrics = [json.loads((out / f"round_{r}" / "metrics.json").read_text()) for r in range(RECIPES[recipe][1])]
    assert [m["global_step"] for m in metrics] == [1] * RECIPES[recipe][1]
