#!/usr/bin/env bash
# Round 6 (docs/TRAINING.md, issue 14): certified losses beside the Hamming terms, on the 2-core
# CPU machine, two queues side by side (one torch thread each).  Each run resumes with
#   hamverify train-small --resume runs/r6/NAME/last.pt --out runs/r6/NAME
# Usage: bash benchmarks/round6.sh A|B   (queue A: MNIST, queue B: CIFAR-10)
# The later runs have 20 epochs: the machine was shared with verification work (epochs ran 2-3x slower).
ROUND=r6
. "$(dirname "$0")/queue.sh"
case "${1:-}" in
  A)
    run mnist_0.1_ibp-hv_e30 --dataset mnist --eps 0.1 --recipe ibp-hv --epochs 30
    # the ablation: the same certified loss without the Hamming terms
    run mnist_0.1_ibp_e30 --dataset mnist --eps 0.1 --recipe ibp --epochs 30
    # IBP over a larger ball for the large eps (Gowal et al. trained 0.4 for 0.3).  Plain ibp, not
    # ibp-hv: at 0.1 the ablation above verified more without the Hamming terms (docs/TRAINING.md).
    run mnist_0.3_ibp_e20 --dataset mnist --eps 0.3 --recipe ibp --epochs 20 --train-eps-factor 1.33
    ;;
  B)
    run cifar_8_ibp-hv_e30 --dataset cifar10 --eps 8/255 --recipe ibp-hv --epochs 30
    run cifar_2_mtl-ibp-hv_e20 --dataset cifar10 --eps 2/255 --recipe mtl-ibp-hv --epochs 20
    ;;
  *) echo "usage: $0 A|B" >&2; exit 2 ;;
esac
