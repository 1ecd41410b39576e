#!/usr/bin/env bash
# Round 9 (docs/TRAINING.md, issue 14): CIFAR-10 2/255, the one target rounds 6-8 missed, on the
# 2-core CPU machine. Rounds 6-8 found the IBP term at the full ball underfits this small network at
# 2/255 (plain IBP: training accuracy 42 % at epoch 17) and MTL-IBP with a small IBP share
# (alpha 0.05) + Hamming terms closest to the Hamming model (41.6 % vs 43.9 % held-out, 20 epochs,
# lr 5e-4). Queue G: the same loss with the Hamming model's learning rate (1e-3) and a 2x longer
# schedule (stopped at epoch 3: its epochs took 120-310 s on the loaded machine, and epochs 1-3
# repeated round 7's to 0.2 points). Queue G2: the kappa schedule instead -- half the weight stays on
# the clean CE after the ramp (kappa 1 -> 0.5), against the underfitting (training accuracy 47 % at
# the end of round 7's run, 75 % for plain training). Queue H: the sweep entries of issue 14 not yet
# trained, at MNIST 0.1 on compressed schedules: plain MTL-IBP, and SABR + Hamming.
# Each run resumes with  hamverify train-small --resume runs/r9/NAME/last.pt --out runs/r9/NAME
# Usage: bash benchmarks/round9.sh G|G2|H
ROUND=r9
. "$(dirname "$0")/queue.sh"
case "${1:-}" in
  G) run cifar_2_mtl-ibp-hv_a005_lr1e-3_e40 --dataset cifar10 --eps 2/255 --recipe mtl-ibp-hv --mtl-alpha 0.05 --lr 1e-3 --epochs 40 ;;
  G2) run cifar_2_mtl-ibp-hv_a005_k05_e20 --dataset cifar10 --eps 2/255 --recipe mtl-ibp-hv --mtl-alpha 0.05 --kappa-end 0.5 --lr 1e-3 --epochs 20 ;;
  H) run mnist_0.1_mtl-ibp_e15 --dataset mnist --eps 0.1 --recipe mtl-ibp --epochs 15
     run mnist_0.1_sabr-hv_e10 --dataset mnist --eps 0.1 --recipe sabr-hv --attack-steps 4 --epochs 10 ;;
  *) echo "usage: $0 G|G2|H" >&2; exit 2 ;;
esac
