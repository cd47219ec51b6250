"""Test-only callback: each rank writes its final logged metrics to ``rank<R>.json`` in a folder."""

import json
import os

from lightning.pytorch.callbacks import Callback


class RankMetrics(Callback):
    def __init__(self, folder: str):
        self.folder = folder

    def on_fit_end(self, trainer, pl_module):
        os.makedirs(self.folder, exist_ok=True)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        metrics["global_step"] = trainer.global_step
        with open(os.path.join(self.folder, f"rank{trainer.global_rank}.json"), "w") as handle:
            json.dump(metrics, handle)
