#!/usr/bin/env bash
# Round 10 (docs/TRAINING.md, issue 14): the one sweep entry of issue 14 not yet trained -- the MNIST
# RS baseline with Xiao et al. 2019's recipe (PGD-40 adversarial training + RS loss + L1,
# `--recipe rs-xiao`) -- on a compressed schedule that fits the 2-core CPU machine (one torch
# thread: about 280 images/s, so ~3.5 min per epoch on an idle core; every schedule knot scales
# with --epochs). Queue I: MNIST 0.1, 15 epochs.
# Each run resumes with  hamverify train-small --resume runs/r10/NAME/last.pt --out runs/r10/NAME
# Usage: bash benchmarks/round10.sh I
ROUND=r10
. "$(dirname "$0")/queue.sh"
case "${1:-}" in
  I) run mnist_0.1_rs-xiao_e15 --dataset mnist --eps 0.1 --recipe rs-xiao --epochs 15 ;;
  *) echo "usage: $0 I" >&2; exit 2 ;;
esac
