#!/usr/bin/env bash
# Round 16 (docs/TRAINING.md, issue 14): CIFAR-10 2/255, round 13's shipped recipe (SABR, box
# lambda 0.1, PGD-4 centre, lr 1e-3, 60 epochs, --select best-val) on cifar_small_bn -- a BatchNorm
# after each convolution, folded into the IR for verification -- the one change.
ROUND=r16
. "$(dirname "$0")/queue.sh"
COMMON=(--dataset cifar10 --eps 2/255 --attack-steps 4 --lr 1e-3 --select best-val)
case "${1:-}" in
  B) run cifar_2_sabr_l01_e60_bn --arch cifar_small_bn --recipe sabr --sabr-lambda 0.1 --epochs 60 "${COMMON[@]}" ;;
  *) echo "usage: $0 B" >&2; exit 2 ;;
esac
