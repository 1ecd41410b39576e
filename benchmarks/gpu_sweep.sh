#!/usr/bin/env bash
# The training runs of docs/TRAINING.md on one GPU machine: every run in parallel, each a
# `hamverify train-small` process, all stopped at a deadline (they resume with --resume).
#   RUNS=/tmp/runs BUDGET=480 bash benchmarks/gpu_sweep.sh
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
RUNS=${RUNS:-/tmp/runs}; BUDGET=${BUDGET:-480}
mkdir -p "$RUNS"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
# MPS lets the many small training processes run their kernels side by side on the GPU.
if nvidia-cuda-mps-control -d 2>/dev/null && timeout 60 python3 -c "import torch; torch.zeros(1).cuda()"; then
  echo "MPS on"
else
  echo quit | nvidia-cuda-mps-control 2>/dev/null; echo "MPS off"
fi
S="python3 benchmarks/recipe_sweep.py train --device cuda --max-seconds $BUDGET"
$S --out "$RUNS/full" --epochs 100 --variants hv --seeds 0,1,2 --jobs 3 > "$RUNS/full_hv.txt" 2>&1 &
$S --out "$RUNS/full" --epochs 100 --variants paper-adam,rollback,stab-logits,rs,none --jobs 5 > "$RUNS/full_other.txt" 2>&1 &
$S --out "$RUNS/full_2_255" --epochs 100 --variants hv --eps 2/255 --jobs 1 > "$RUNS/full_2_255.txt" 2>&1 &
$S --out "$RUNS/sweep" --epochs 25 --jobs 6 > "$RUNS/sweep.txt" 2>&1 &
wait
echo "all stopped"
