#!/usr/bin/env bash
# Round 17 (docs/TRAINING.md, issue 14): cifar_small_bn (round 16's BatchNorm arch) at the other
# budgets.  A: CIFAR-10 8/255 with the shipped 8/255 recipe (plain IBP, 30 epochs, the model that
# verifies 24.66 %; target 24 %, stretch 28 %) -- BatchNorm is the one change.  B: CIFAR-10 2/255,
# round 16's SABR recipe with a smaller box (lambda 0.05 instead of 0.1): round 16's BN net is
# 2.2 points under PGD, so the exact verifier has room for a less regularized net.  C: CIFAR-10
# 8/255 with round 15's SABR (lambda 0.4; best on the held-out images on cifar_small, 26.6 %) on
# cifar_small_bn.
# Each run resumes with  hamverify train-small --resume runs/r17/NAME/last.pt --out runs/r17/NAME
# Usage: bash benchmarks/round17.sh A|B|C
ROUND=r17
. "$(dirname "$0")/queue.sh"
case "${1:-}" in
  A) run cifar_8_ibp_e30_bn --arch cifar_small_bn --dataset cifar10 --eps 8/255 --recipe ibp --select best-val ;;
  B) run cifar_2_sabr_l005_e60_bn --arch cifar_small_bn --dataset cifar10 --eps 2/255 --recipe sabr --sabr-lambda 0.05 \
       --epochs 60 --attack-steps 4 --lr 1e-3 --select best-val ;;
  C) run cifar_8_sabr_l04_e30_bn --arch cifar_small_bn --dataset cifar10 --eps 8/255 --recipe sabr --sabr-lambda 0.4 \
       --attack-steps 4 --select best-val ;;
  *) echo "usage: $0 A|B|C" >&2; exit 2 ;;
esac
