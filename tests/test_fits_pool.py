"""lit_effdl.experiment.results_in_order: a killed script takes its parallel workers with it (Linux)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = """
from lit_effdl.experiment import results_in_order

def long_fit(epochs):
    import os
    import lightning as L
    from lit_effdl.data import SyntheticDataModule
    from lit_effdl.methods import Supervised
    dm = SyntheticDataModule(num_classes=3, image_size=16, channels=3, num_train=64, num_test=8, batch_size=8)
    model = Supervised(num_classes=3, in_chans=3, backbone="small_cnn_w8")

    class Training(L.Callback):  # tells the test once Lightning's SIGTERM handler is in place
        def on_train_start(self, trainer, module):
            print("worker", os.getpid(), flush=True)

    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, callbacks=[Training()])
    trainer.fit(model, dm)
    return epochs

if __name__ == "__main__":
    for _ in results_in_order(long_fit, [(100000,), (100000,)], jobs=2):
        pass
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_workers_die_with_a_killed_parent(tmp_path):
    script = tmp_path / "pool.py"
    script.write_text(SCRIPT)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    workers = [int(parent.stdout.readline().split()[1]) for _ in range(2)]
    # inside fit, where Lightning handles SIGTERM itself
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=30)
    deadline = time.time() + 30
    alive = workers
    while alive and time.time() < deadline:
        time.sleep(0.2)
        alive = [pid for pid in workers if _running(pid)]
    for pid in alive:  # do not leave them behind when the test fails
        os.kill(pid, signal.SIGKILL)
    parent.stdout.close()
    assert not alive, f"workers {alive} outlived their parent"


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"
