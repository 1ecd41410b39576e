#!/usr/bin/env bash
# Round 14 (docs/TRAINING.md, issue 14): CIFAR-10 2/255, round 13's SABR recipe (lambda 0.1, 60 epochs)
# without the data augmentation (random crop + flip) that train-small turns on for CIFAR-10.
# Round 13's training logs show this small network underfitting, not overfitting: its accuracy on the
# augmented training batches (58 %) stays under its clean accuracy on held-out images (61 %).  Fitting
# the unaugmented images is the one change measured here (P), against round 13's L.
# Each run resumes with  hamverify train-small --resume runs/r14/NAME/last.pt --out runs/r14/NAME
# Usage: bash benchmarks/round14.sh P
ROUND=r14
. "$(dirname "$0")/queue.sh"
COMMON=(--dataset cifar10 --eps 2/255 --attack-steps 4 --lr 1e-3 --select best-val)
case "${1:-}" in
  P) run cifar_2_sabr_l01_e60_noaug --recipe sabr --sabr-lambda 0.1 --epochs 60 --no-augment "${COMMON[@]}" ;;
  *) echo "usage: $0 P" >&2; exit 2 ;;
esac
