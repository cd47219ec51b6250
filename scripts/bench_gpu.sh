#!/usr/bin/env bash
# GPU benchmark: ResNet-50 224x224 bf16-mixed + channels_last train images/s through lit-effdl vs a
# plain PyTorch loop (gpu_overhead_ratio, both in scripts/benchmarks/gpu.py, one process), and
# WRN-28-2 FixMatch steps/s with augment_on loader vs device. Under 8 minutes on one GPU.
#
#   scripts/bench_gpu.sh [OUT_JSON]      (default: bench_gpu.json; PYTHON=... to pick the interpreter)
#
# Without a CUDA GPU it prints a skip message, writes {"skipped": true, ...} and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_JSON="${1:-bench_gpu.json}"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
export HF_HUB_OFFLINE=1

set +e
"$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)"
probe=$?
set -e
if [[ $probe -eq 3 ]]; then
  echo "bench_gpu: SKIPPED: no CUDA GPU visible to PyTorch (torch.cuda.is_available() is False); nothing measured."
  printf '{"skipped": true, "reason": "no CUDA GPU visible to PyTorch"}\n' > "$OUT_JSON"
  echo "bench_gpu: wrote $OUT_JSON"
  exit 0
elif [[ $probe -ne 0 ]]; then
  echo "bench_gpu: FAILED: $PYTHON cannot import torch (exit $probe)" >&2
  exit 1
fi

"$PYTHON" -c "import torch; print('bench_gpu: device', torch.cuda.get_device_name(0), '| torch', torch.__version__)"
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
# 470 s: the whole run stays under 8 minutes even on a slow start.
set +e
timeout --kill-after=5 470 "$PYTHON" scripts/bench.py gpu --json 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}
set -e
if [[ $status -ne 0 ]]; then
  echo "bench_gpu: FAILED (exit $status; 124 means it ran over the 470 s limit)" >&2
  exit "$status"
fi
tail -n 1 "$LOG" > "$OUT_JSON"
echo "bench_gpu: wrote $OUT_JSON"
