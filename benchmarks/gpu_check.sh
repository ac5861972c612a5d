#!/usr/bin/env bash
# One call on a lent GPU machine answers the GPU questions of the XKD recipe (under 10 minutes):
#   1. the ViT-B XKD step at the recipe's per-device batch (32), bf16 autocast, eager and
#      torch.compile: clips/s, MFU against the card's data-sheet bf16 peak, utilisation against the
#      same run's measured 8192^3 bf16 matmul peak, peak GPU memory (benchmarks/xkd_throughput.py);
#   2. the data loader's clips/s with the recipe's workers per GPU, against what that step consumes,
#      and the batched views' time on the GPU (augment_on: batch) per clip (benchmarks/data.py).
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

# The item pipeline's clips/s per CPU core (benchmarks/data.py, Kinetics-like clip), then the
# recipe's loader estimate: per-core rate x the recipe's workers (num_workers 10 per GPU, capped by
# this machine's cores) against the GPU step's measured clips/s from the step above.
# --views-device cuda: the batched views (augment_on: batch) at the per-device batch, timed on the GPU
timeout 150 $PY benchmarks/data.py --items 16 --views-device cuda --json "$DEST/gpu_data.json" || status=$?
$PY - "$DEST/gpu_xkd.json" "$DEST/gpu_data.json" <<'PYEOF' || status=$?
import json, os, sys
step, data = (json.load(open(p)) for p in sys.argv[1:3])
workers = min(10, os.cpu_count() or 1)
per_core = data["clips_per_s_per_core"]
for r in step["results"]:
    if "clips_per_s" not in r:
        continue
    for path, rate in per_core.items():
        loader = rate * workers
        print(f"{r['mode']:<13} step {r['clips_per_s']:.0f} clips/s | loader ({path}, {workers} workers) "
              f"~{loader:.0f} clips/s | data wait >= {max(0.0, 1 - loader / r['clips_per_s']):.0%}")
PYEOF
exit $status
