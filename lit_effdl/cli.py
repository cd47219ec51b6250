"""The `lit-effdl` command: Lightning's CLI with this project's defaults.

``lit-effdl fit --config configs/digits/supervised.yaml --test_after_fit true`` trains, then tests
the final weights (EMA when on); ``--test_checkpoint best`` tests the best ``val/acc`` checkpoint
instead. Model and data are chosen by ``class_path`` (any ``BaseMethod`` and any
``LabelBudgetDataModule``); ``num_classes``, ``in_chans`` and ``class_names`` come from the data.

``lit-effdl rounds --config configs/digits/noisy_student.yaml --out DIR [overrides]`` runs a
rounds recipe (Noisy Student, offline pseudo-labels): see ``lit_effdl.rounds``.

``lit-effdl select --config C --strategy typiclust --budget 10 --out DIR`` chooses which images to
label: see ``lit_effdl.select.command``.
"""

from __future__ import annotations

import os
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Literal

import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import (
    LearningRateMonitor,
    ModelCheckpoint,
    ProgressBar,
)
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lit_effdl.callbacks.confusion import TestConfusionMatrix
from lit_effdl.callbacks.predictions import PredictionsCSV
from lit_effdl.callbacks.progress import ThrottledRichProgressBar
from lit_effdl.callbacks.run_status import RunMetadata, RunStatus, SnapshotOnException, write_run_status
from lit_effdl.errors import UserError
from lit_effdl.runtime import tune_allocator

LAST_CHECKPOINT_WARNINGS = (r"`\.fit\(ckpt_path=None\)` was called without a model",
                            r'\.fit\(ckpt_path="last"\) is set, but there is no last checkpoint')
# validate / test / predict from a fit's checkpoint: its checkpoint callbacks' state means nothing there
EVALUATION_CHECKPOINT_WARNINGS = (r"Be aware that when using `ckpt_path`, callbacks used to create the checkpoint",
                                  r"The dirpath has changed from .* won't be reloaded")

CLI_DESCRIPTION = ("lit-effdl fit|validate|test|predict: Lightning's CLI. Also lit-effdl rounds --config C --out DIR "
                   "[overrides]: a rounds recipe (Noisy Student, offline pseudo-labels); see lit-effdl rounds --help. "
                   "And lit-effdl select --config C --strategy S --budget N --out DIR: which images to label.")


class EffdlCLI(LightningCLI):
    """LightningCLI with checkpointing on ``val/acc``, LR monitoring and data -> model links."""

    def __init__(self, *args, resume_ckpt_path: str | None = None, **kwargs) -> None:
        """``resume_ckpt_path``: with ``run=False``, the checkpoint the caller will resume ``fit`` from,
        so the default logger reuses that run's folder (as ``fit --ckpt_path`` does)."""
        self._resume_ckpt_path = resume_ckpt_path
        self._final_checkpoint: ModelCheckpoint | None = None  # the every-epoch last.ckpt writer
        tune_allocator()  # before any batch is allocated (see lit_effdl.runtime)
        super().__init__(*args, **kwargs)

    def init_parser(self, **kwargs) -> LightningArgumentParser:
        kwargs.setdefault("description", CLI_DESCRIPTION)
        return super().init_parser(**kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--test_after_fit", type=bool, default=False,
            help="after fit, test the checkpoint --test_checkpoint names (one command, one test number)",
        )
        parser.add_argument(
            "--test_checkpoint", type=Literal["best", "last"], default="last",
            help="the checkpoint tested after fit (and a rounds recipe's next teacher): 'last', the final "
                 "weights (EMA when on), the FixMatch paper's protocol, or 'best' val/acc (a small "
                 "validation split makes 'best' pick noise)",
        )
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({
            "checkpoint.monitor": "val/acc",
            "checkpoint.mode": "max",
            "checkpoint.save_last": False,  # last.ckpt comes from the every-epoch checkpoint below
            "checkpoint.filename": "best-epoch{epoch:03d}-acc{val/acc:.4f}",
            "checkpoint.auto_insert_metric_name": False,
        })
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        parser.set_defaults({"lr_monitor.logging_interval": "step"})
        for source, target in (
            ("data.num_classes", "model.init_args.num_classes"),
            ("data.num_channels", "model.init_args.in_chans"),
            ("data.class_names", "model.init_args.class_names"),
        ):
            parser.link_arguments(source, target, apply_on="instantiate")

    def after_fit(self) -> None:
        if self.config[self.subcommand].get("test_after_fit"):
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=self.checkpoint_to_test(), weights_only=True)
        write_run_status(self.trainer, "completed")

    def checkpoint_to_test(self) -> str | None:
        """The file ``test_checkpoint`` names after a fit: the best ``val/acc`` one or ``last.ckpt``
        (``None``, the weights in memory, where that file was not written)."""
        if self._of_subcommand(self.config).get("test_checkpoint", "last") == "last":
            final = self._final_checkpoint
            return (final.best_model_path if final is not None else "") or None
        checkpoint = self.trainer.checkpoint_callback
        return (checkpoint.best_model_path if checkpoint is not None else "") or None

    def _of_subcommand(self, config):
        """The subcommand's part of a parsed ``config`` (all of it with ``run=False``)."""
        return config[self.subcommand] if self.subcommand else config

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        """Lightning reads ``ckpt_path``'s hyperparameters after parsing: a file that is not there or
        not a checkpoint gets one clear message first."""
        super().parse_arguments(parser, args)
        sub = self.config.get(self.config.get("subcommand") or "", None)
        ckpt_path = sub.get("ckpt_path") if sub is not None else None
        if not ckpt_path or ckpt_path in ("last", "best", "hpc", "registry"):
            return
        if not Path(ckpt_path).is_file():
            raise UserError(f"ckpt_path {ckpt_path} is not a file: give a .ckpt file, 'last' or 'best'")
        try:  # mmap: the tensors are not read (a legacy, non-zip file is read whole)
            torch.load(ckpt_path, weights_only=True, map_location="cpu", mmap=zipfile.is_zipfile(ckpt_path))
        except Exception as err:
            raise UserError(f"cannot read checkpoint {ckpt_path}: {type(err).__name__}: {str(err).splitlines()[0]}") from err

    def before_instantiate_classes(self) -> None:
        sub = self.config.get(self.subcommand) if self.subcommand else None
        if sub is not None and "weights_only" in sub and sub.get("weights_only") is None:
            sub["weights_only"] = True  # checkpoints are read with torch.load(weights_only=True) only

    def instantiate_trainer(self, **kwargs):
        config = self._of_subcommand(self.config_init).get("trainer") or {}
        callbacks = config.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, list) else [callbacks]
        if config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            callbacks.append(ThrottledRichProgressBar())  # redraws <= 4/s: no per-step metric sync
        config_yaml = self.parser.dump(self.config, skip_none=False, skip_link_targets=False)
        callbacks += [RunMetadata(config_yaml), TestConfusionMatrix()]
        if self.subcommand == "predict":
            callbacks.append(PredictionsCSV())
        kwargs["callbacks"] = callbacks
        check_devices(config.get("accelerator"), config.get("devices"))
        if config.get("logger") in (None, True):
            logger = kwargs["logger"] = self._default_logger(config.get("default_root_dir") or ".")
            if self.subcommand in ("fit", None) and slurm_job_id() is not None:  # Lightning saves and looks for
                kwargs["default_root_dir"] = logger.log_dir  # hpc_ckpt_N.ckpt there: this job's own run folder
        trainer = super().instantiate_trainer(**kwargs)
        trainer.callbacks.append(RunStatus())
        if self.subcommand in ("fit", None):  # None: run=False, the caller fits (lit_effdl.experiment.run_fit)
            checkpoints = os.path.join(trainer.log_dir or ".", "checkpoints")
            # Lightning 2.6 refreshes save_last only when a top-k file is saved: resuming needs every epoch
            self._final_checkpoint = ModelCheckpoint(dirpath=checkpoints, filename="last", monitor=None, save_top_k=1,
                                                     enable_version_counter=False)
            trainer.callbacks.append(self._final_checkpoint)
            trainer.callbacks.append(SnapshotOnException(dirpath=checkpoints))
            resume = self.config[self.subcommand].get("ckpt_path") if self.subcommand else self._resume_ckpt_path
            if not resume:  # with an exception checkpoint Lightning reads "no ckpt_path" as "last" and warns
                for message in LAST_CHECKPOINT_WARNINGS:  # twice; a new run folder has nothing to resume
                    warnings.filterwarnings("ignore", message=message)
        else:  # validate, test, predict
            for message in EVALUATION_CHECKPOINT_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
        return trainer

    def _default_logger(self, root: str) -> TensorBoardLogger:
        """TensorBoard under ``lightning_logs/`` (no placeholder ``hp_metric``); resuming a fit reuses the run
        folder it resumes; a fit under SLURM logs into ``version_<SLURM_JOB_ID>``, which its requeued job reuses."""
        ckpt_path = self.config[self.subcommand].get("ckpt_path") if self.subcommand == "fit" else self._resume_ckpt_path
        version = resumed_version(root, ckpt_path)
        if version is None and self.subcommand in ("fit", None):
            version = slurm_job_id()
        return TensorBoardLogger(save_dir=root, name="lightning_logs", version=version, default_hp_metric=False)


def slurm_job_id() -> int | None:
    """The SLURM job id where Lightning runs under SLURM (``SLURMEnvironment``), else None: a requeued
    job keeps its id, so its run folder can be found again."""
    return SLURMEnvironment.job_id() if SLURMEnvironment.detect() else None


def check_devices(accelerator: object, devices: object) -> None:
    """More CPU processes than cores is a typo, not a plan (Lightning checks GPUs itself)."""
    count = int(devices) if isinstance(devices, int) or (isinstance(devices, str) and devices.isdigit()) else None
    if str(accelerator) == "cpu" and count is not None and count > (os.cpu_count() or 1):
        raise UserError(f"trainer.devices={count} is more than the {os.cpu_count()} CPU cores here: use 1..{os.cpu_count()}")


def resumed_version(root: str, ckpt_path: str | None) -> int | None:
    """The ``version_N`` of the run a checkpoint belongs to (``last``: the newest run with a last.ckpt)."""
    if not ckpt_path:
        return None
    runs = Path(root) / "lightning_logs"
    if ckpt_path == "last":
        candidates = [p.parent.parent.name for p in runs.glob("version_*/checkpoints/last*.ckpt")]
    else:
        path = Path(ckpt_path).resolve()
        candidates = [path.parent.parent.name] if path.parent.name == "checkpoints" and path.parent.parent.parent == runs.resolve() else []
    versions = [int(name.split("_", 1)[1]) for name in candidates if name.split("_", 1)[1].isdigit()]
    return max(versions) if versions else None


def close_process_group() -> None:
    """Destroy the DDP process group before exit: left to interpreter shutdown, gloo's threads can
    abort the process ("terminate called without an active exception") after a finished run."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _wants_debug(args: list[str]) -> bool:
    return "--debug" in args or os.environ.get("LIT_EFFDL_DEBUG", "") not in ("", "0")


def user_error_in(err: BaseException) -> UserError | None:
    """The user-facing error behind ``err``: a UserError (jsonargparse and Lightning wrap the ones
    raised in constructors), Lightning's misconfiguration errors, or a file-system error naming a path."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, UserError):
            return err
        if isinstance(err, MisconfigurationException):
            return UserError(str(err))
        if isinstance(err, OSError) and getattr(err, "filename", None):
            return UserError(f"cannot use {err.filename}: {err.strerror or err}")
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def main(args: list[str] | None = None) -> None:
    """Console entry point; bad input ends with one message and exit code 2 (``--debug``: traceback).
    ``lit-effdl rounds ...`` runs ``lit_effdl.rounds.main``, ``lit-effdl select ...``
    ``lit_effdl.select.command.main``; anything else is Lightning's CLI."""
    from_argv = args is None
    args = list(sys.argv[1:] if from_argv else args)
    if args[:1] == ["rounds"]:
        from lit_effdl.rounds import main as rounds_main

        rounds_main(args[1:])
        return
    if args[:1] == ["select"]:
        from lit_effdl.select.command import main as select_main

        code = select_main(args[1:])
        if code:
            sys.exit(code)
        return
    debug = _wants_debug(args)
    if "--debug" in args:
        args.remove("--debug")
        if from_argv:
            sys.argv.remove("--debug")
    try:
        from lit_effdl.experiment import make_cli

        make_cli(None if from_argv else args, run=True)
        close_process_group()
    except KeyboardInterrupt:
        sys.exit(130)
    except SIGTERMException:  # a SystemExit(None): the checkpoint is saved, report the signal
        print("lit-effdl: stopped by SIGTERM; checkpoint saved as checkpoints/on_exception.ckpt", file=sys.stderr)
        sys.exit(143)
    except Exception as err:
        user_error = user_error_in(err)
        if debug or user_error is None:
            raise  # a bug or an environment problem: keep the whole trace
        print(f"lit-effdl: error: {user_error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
