#!/usr/bin/env bash
# Round 12 (docs/TRAINING.md, issue 14): CIFAR-10 2/255, round 11's SABR recipe (lambda 0.2, PGD-4 box
# centre, lr 1e-3, --select best-val) trained 40 epochs instead of 15.  Round 11's sabr run came within
# 0.2 points of the Hamming model on the held-out images after 15 epochs with its clean accuracy still
# rising (50.7 %) and its verified figure 1.2 points under its PGD figure: the network underfits, so the
# schedule's length is the change measured here (every schedule knot scales with --epochs).
# Each run resumes with  hamverify train-small --resume runs/r12/NAME/last.pt --out runs/r12/NAME
# Usage: bash benchmarks/round12.sh K
ROUND=r12
. "$(dirname "$0")/queue.sh"
COMMON=(--dataset cifar10 --eps 2/255 --sabr-lambda 0.2 --attack-steps 4 --lr 1e-3 --select best-val)
case "${1:-}" in
  K) run cifar_2_sabr_l02_e40 --recipe sabr --epochs 40 "${COMMON[@]}" ;;
  *) echo "usage: $0 K" >&2; exit 2 ;;
esac
