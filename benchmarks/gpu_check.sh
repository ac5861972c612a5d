#!/usr/bin/env bash
# One call on a lent GPU machine answers the GPU questions of the XKD recipe (under 10 minutes):
#   1. the ViT-B XKD step at the recipe's per-device batch (32), bf16 autocast, eager and
#      torch.compile: clips/s, MFU against the card's data-sheet bf16 peak, utilisation against the
#      same run's measured 8192^3 bf16 matmul peak, peak GPU memory (benchmarks/xkd_throughput.py);
#   2. the data loader's clips/s with the recipe's workers per GPU, against what that step consumes
#      (benchmarks/data.py).
# Runs with the machine's python3 (PyTorch, Lightning, einops are in its image); packages it lacks
# (PyAV for decoding) travel as wheels in .whl/ (see the device tool's README), installed here
# into /tmp/site. Results: $OUT (the device tool's return folder) or runs/bench.
#
#   bash benchmarks/gpu_check.sh            # everything
#   STEPS=5 bash benchmarks/gpu_check.sh    # fewer timed steps per mode
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEST=${OUT:-runs/bench}
STEPS=${STEPS:-10}
mkdir -p "$DEST"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader || true
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"

status=0
# ~1 minute eager, ~2-4 minutes compiling ViT-B + timed steps
timeout 420 $PY benchmarks/xkd_throughput.py --workloads base-b32 --modes eager-bf16 compile-bf16 \
    --steps "$STEPS" --json "$DEST/gpu_xkd.json" || status=$?

# the recipe's loader: experiments/xkd/xkd_vitb_k400.yaml's workers per GPU, on Kinetics-like clips
if [ -f benchmarks/data.py ]; then
    timeout 150 $PY benchmarks/data.py --gpu-step-json "$DEST/gpu_xkd.json" --json "$DEST/gpu_data.json" \
        || status=$?
fi
exit $status
