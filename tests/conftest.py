"""Shared fixtures: offline hub, quiet warnings, small trainers."""

import os
import warnings

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
for _name in [name for name in os.environ if name.startswith("SLURM_")]:  # a suite run inside a SLURM job:
    del os.environ[_name]  # fits would log into version_<job id> (tests/test_slurm_requeue.py sets its own)
warnings.filterwarnings("ignore", message=".*does not have many workers.*")


@pytest.fixture
def fast_trainer_kwargs(tmp_path):
    """Trainer settings for quick CPU fits in tests."""
    return dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )
