#!/usr/bin/env bash
# Round 8 (docs/TRAINING.md, issue 14): what round 7's results asked next, on the 2-core CPU machine.
# Round 7 found the Hamming terms (gamma_S 8, gamma_H 3000) hurt the IBP loss at CIFAR-10 8/255 as
# at MNIST 0.1; queue E tries them 10x lighter, queue F a 2x longer MNIST 0.1 schedule.
# Each run resumes with  hamverify train-small --resume runs/r8/NAME/last.pt --out runs/r8/NAME
# Usage: bash benchmarks/round8.sh E|F
ROUND=r8
. "$(dirname "$0")/queue.sh"
case "${1:-}" in
  E) run cifar_8_ibp-hv_gs1_gh300_e30 --dataset cifar10 --eps 8/255 --recipe ibp-hv --epochs 30 --gamma-s 1 --gamma-h 300 ;;
  F) run mnist_0.1_ibp_e60 --dataset mnist --eps 0.1 --recipe ibp --epochs 60 ;;
  *) echo "usage: $0 E|F" >&2; exit 2 ;;
esac
