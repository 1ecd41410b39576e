#!/usr/bin/env bash
# Second GPU round of docs/TRAINING.md: stronger logit-stability variants of `hv`, full schedule,
# all in parallel, stopped at a deadline (finish on any machine with `train-small --resume`).
#   RUNS=/tmp/runs BUDGET=200 bash benchmarks/gpu_sweep2.sh
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
RUNS=${RUNS:-/tmp/runs}; BUDGET=${BUDGET:-200}
mkdir -p "$RUNS"
if nvidia-cuda-mps-control -d 2>/dev/null && timeout 60 python3 -c "import torch; torch.zeros(1).cuda()"; then
  echo "MPS on"
else
  echo quit | nvidia-cuda-mps-control 2>/dev/null; echo "MPS off"
fi
python3 benchmarks/recipe_sweep.py train --device cuda --max-seconds "$BUDGET" --out "$RUNS/round2" --epochs 100 \
  --variants hv-gs2,hv-gs8,hv-gs20,hv-logsum,hv-gs2-e15,hv-gs8-e15,hv-gs2-cce,hv-gs8-gh3000 --jobs 8 > "$RUNS/round2.txt" 2>&1
echo "all stopped"
