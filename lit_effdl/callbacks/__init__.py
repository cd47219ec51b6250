"""Lightning callbacks of lit-effdl, one module each; every callback class is exported here."""

from lit_effdl.callbacks.confusion import TestConfusionMatrix
from lit_effdl.callbacks.finetuning import GradualUnfreeze
from lit_effdl.callbacks.knn import KNNMonitor
from lit_effdl.callbacks.max_norm import MaxNormConstraint
from lit_effdl.callbacks.max_norm import MaxNormConstraint
from lit_effdl.callbacks.nonfinite import NonFiniteGuard
from lit_effdl.callbacks.predictions import PredictionsCSV
from lit_effdl.callbacks.preview import AugmentPreview
from lit_effdl.callbacks.progress import ThrottledRichProgressBar
from lit_effdl.callbacks.run_status import RunMetadata, RunStatus, SnapshotOnException
from lit_effdl.callbacks.teacher_accuracy import TeacherAccuracy
from lit_effdl.callbacks.teacher_logits import TeacherLogitCache

__all__ = [
    "AugmentPreview",
    "GradualUnfreeze",
    "KNNMonitor",
    "MaxNormConstraint",
    "MaxNormConstraint",
    "NonFiniteGuard",
    "PredictionsCSV",
    "RunMetadata",
    "RunStatus",
    "SnapshotOnException",
    "TeacherAccuracy",
    "TeacherLogitCache",
    "TestConfusionMatrix",
    "ThrottledRichProgressBar",
]
