#!/usr/bin/env bash
# Round 15 (docs/TRAINING.md, issue 14): CIFAR-10 8/255 with SABR.  The shipped 8/255 model is plain
# IBP (`--recipe ibp`, 30 epochs; 24.66 % verified on all 10,000 test images, target 24 %, stretch 28 %).
# SABR (IBP on a box of lambda * eps around a PGD point; lambda 0.4, SABR's own choice at 8/255) trades
# some bound tightness for accuracy, which the exact verifier can absorb, as at 2/255 (rounds 11-13).
# Same schedule as the IBP model; PGD-4 box centres and --select best-val as in rounds 11-13.
# Q2: MTL-IBP (0.5 IBP + 0.5 CE on a 1-step attack point, the recipe's defaults), the same schedule.
# Each run resumes with  hamverify train-small --resume runs/r15/NAME/last.pt --out runs/r15/NAME
# Usage: bash benchmarks/round15.sh Q|Q2
ROUND=r15
. "$(dirname "$0")/queue.sh"
case "${1:-}" in
  Q) run cifar_8_sabr_l04_e30 --dataset cifar10 --eps 8/255 --recipe sabr --sabr-lambda 0.4 --attack-steps 4 --select best-val ;;
  Q2) run cifar_8_mtl-ibp_a05_e30 --dataset cifar10 --eps 8/255 --recipe mtl-ibp --select best-val ;;
  *) echo "usage: $0 Q|Q2" >&2; exit 2 ;;
esac
