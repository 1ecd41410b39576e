#!/usr/bin/env bash
# Round 10 (docs/TRAINING.md, issue 14): the one sweep entry of issue 14 not yet trained -- the MNIST
# RS baseline with Xiao et al. 2019's recipe (PGD-40 adversarial training + RS loss + L1,
# `--recipe rs-xiao`) -- on a compressed schedule that fits the 2-core CPU machine (one torch
# thread: about 280 images/s, so ~3.5 min per epoch on an idle core; every schedule knot scales
# with --epochs). Queue I: MNIST 0.1, 15 epochs.
# Each run resumes with  hamverify train-small --resume runs/r10/NAME/last.pt --out runs/r10/NAME
# Usage: bash benchmarks/round10.sh I
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
export HAMVERIFY_DATA=${HAMVERIFY_DATA:-$(cd .. && pwd)/shared/data}
HV=${HV:-.venv/bin/hamverify}
mkdir -p runs/r10
run() {  # NAME ARGS...: skip a finished run, resume an interrupted one
  local name=$1; shift
  local out=runs/r10/$name
  if [ -f "$out/model.pt" ]; then echo "done: $name"; return; fi
  if [ -f "$out/last.pt" ]; then
    "$HV" train-small --resume "$out/last.pt" --out "$out" --quiet >> "runs/r10/$name.log" 2>&1
  else
    "$HV" train-small "$@" --quiet --out "$out" > "runs/r10/$name.log" 2>&1
  fi
}
case "${1:-}" in
  I) run mnist_0.1_rs-xiao_e15 --dataset mnist --eps 0.1 --recipe rs-xiao --epochs 15 ;;
  *) echo "usage: $0 I" >&2; exit 2 ;;
esac
