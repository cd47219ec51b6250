"""One LightningModule per paradigm, over the shared `BaseMethod`."""

from lit_effdl.methods.base import BaseMethod
from lit_effdl.methods.distill import Distill
from lit_effdl.methods.finetune import Finetune
from lit_effdl.methods.fixmatch import FixMatch
from lit_effdl.methods.flexmatch import FlexMatch
from lit_effdl.methods.freematch import FreeMatch
from lit_effdl.methods.noisy_student import NoisyStudent
from lit_effdl.methods.pseudo_label import OfflinePseudoLabel, PseudoLabel
from lit_effdl.methods.self_training import SelfTrainingStudent
from lit_effdl.methods.simclr import SimCLR
from lit_effdl.methods.supervised import Supervised

__all__ = ["BaseMethod", "Distill", "Finetune", "Supervised", "FixMatch", "FlexMatch", "FreeMatch", "PseudoLabel",
           "OfflinePseudoLabel", "SelfTrainingStudent", "NoisyStudent", "SimCLR"]
