"""Every shipped config trains a step and validates (``--trainer.fast_dev_run``): configs do not rot.

CIFAR-10 and STL-10 read tiny files in the real formats; their batches are shrunk to keep the WRNs
quick on a CPU; ``distill.yaml`` gets an untrained teacher of its architecture (a plain state_dict).
"""

from pathlib import Path

import pytest
import torch

from cli_runner import run_in_runner
from lit_effdl.models import create_backbone
from tiny_data import make_tiny_cifar10, make_tiny_stl10

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ONE_STEP = ["--trainer.fast_dev_run", "true", "--trainer.enable_progress_bar", "false", "--trainer.accelerator", "cpu",
            "--trainer.precision", "32-true"]
SMALL_BATCHES = ["--data.init_args.batch_size", "4", "--data.init_args.eval_batch_size", "8"]
CASES = {
    "digits/supervised.yaml": [],
    "digits/supervised_16px.yaml": [],
    "digits/supervised_strong.yaml": [],
    "digits/fixmatch.yaml": [],
    "digits/pseudo_label.yaml": [],
    "digits/noisy_student.yaml": [],
    "digits/distill.yaml": ["--model.init_args.teacher_checkpoint", "../teacher.pt"],
    "digits/finetune_probe.yaml": [],
    "digits/finetune_lite0_probe.yaml": [],
    "digits/finetune_lite0_full.yaml": [],
    "cifar10/fixmatch_4000.yaml": ["--data.init_args.num_labels", "20", *SMALL_BATCHES],
    "stl10/noisy_student.yaml": [*SMALL_BATCHES],
}


def test_every_shipped_config_has_a_case():
    shipped = {str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.yaml")}
    assert shipped == set(CASES), "a new config needs a case here"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("configs")
    make_tiny_cifar10(root / "data")
    make_tiny_stl10(root / "data")
    torch.save(create_backbone("small_cnn_w64", num_classes=10, in_chans=1).state_dict(), root / "teacher.pt")
    cases = []
    for i, (config, extra) in enumerate(CASES.items()):
        (root / str(i)).mkdir()
        (root / str(i) / "data").symlink_to(root / "data")  # the configs read root: data
        cases.append({"args": ["fit", "--config", str(CONFIGS / config), *ONE_STEP, *extra], "cwd": str(root / str(i))})
    return dict(zip(CASES, run_in_runner(cases, root)))


@pytest.mark.parametrize("config", list(CASES))
def test_shipped_config_trains_a_step(results, config):
    result = results[config]
    assert result["returncode"] == 0, f"{config}:\n{result['stderr'][-3000:]}"
    assert "Traceback" not in result["stderr"], result["stderr"][-3000:]
    assert "`Trainer.fit` stopped: `max_steps=1` reached" in result["stdout"] + result["stderr"]
