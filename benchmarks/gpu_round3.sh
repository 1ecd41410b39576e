#!/usr/bin/env bash
# Third GPU round (issue 6): the MNIST / Fashion-MNIST runs and the CIFAR-10 runs still missing, all in
# parallel on one GPU. The data travels in parts, so there is one phase per device call:
# Here, once: python benchmarks/device_data.py pack  (writes .dev/m, .dev/c1, .dev/c2; carry one per call)
#   bash benchmarks/gpu_round3.sh mnist          # .dev/m: MNIST npz + Fashion-MNIST IDX; starts those runs
#   bash benchmarks/gpu_round3.sh stage          # .dev/c1: first half of CIFAR-10 train
#   DEADLINE=420 bash benchmarks/gpu_round3.sh cifar   # .dev/c2: the rest; starts CIFAR runs, waits, packs
# Every run is a plain `hamverify train-small` (the command is in its stdout.txt and config.json);
# an unfinished one resumes anywhere with `hamverify train-small --resume RUN/last.pt --out RUN`.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD HAMVERIFY_DATA=/tmp/data
R=/tmp/r
start() {
  local name=$1; shift
  mkdir -p $R/$name
  echo "hamverify train-small --quiet --device cuda --out $name $*" > $R/$name/command.txt
  setsid nohup python3 -m hamverify.cli train-small --quiet --device cuda --out $R/$name "$@" \
    >> $R/$name/stdout.txt 2>&1 < /dev/null &
}
progress() { for d in $R/*/; do echo "$(basename $d): $(tail -c 220 $d/stdout.txt | tail -1)"; done; }
case ${1:-} in
mnist)
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  python3 benchmarks/device_data.py unpack mnist || exit 1
  if nvidia-cuda-mps-control -d 2>/dev/null; then echo "MPS on"; else echo "MPS off"; fi
  python3 -c "import torch; print(torch.__version__, torch.cuda.is_available())"
  start f1_default --dataset fashion-mnist --eps 0.1
  start f1_adv --dataset fashion-mnist --eps 0.1 --adv-ce 1 --epochs 40
  start m1_adv --dataset mnist --eps 0.1 --adv-ce 1 --epochs 40
  start m1_adv_e15 --dataset mnist --eps 0.1 --adv-ce 1 --train-eps-factor 1.5 --epochs 40
  start m1_gs40 --dataset mnist --eps 0.1 --gamma-s 40
  start m1_e15 --dataset mnist --eps 0.1 --train-eps-factor 1.5
  start m3_adv --dataset mnist --eps 0.3 --adv-ce 1 --epochs 40
  start m3_adv_gs40 --dataset mnist --eps 0.3 --adv-ce 1 --gamma-s 40 --epochs 40
  start m3_gs40 --dataset mnist --eps 0.3 --gamma-s 40
  start m3_gs200 --dataset mnist --eps 0.3 --gamma-s 200
  sleep 45; progress; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
  ;;
stage)
  python3 benchmarks/device_data.py unpack cifar1 && progress
  ;;
cifar)
  T0=$(date +%s)
  python3 benchmarks/device_data.py unpack cifar2 || exit 1
  mkdir -p $R/c_rs && cp .dev/c2/rs/* $R/c_rs/   # the RS run to resume: its last.pt, log.jsonl, config.json
  start c_rs --resume $R/c_rs/last.pt
  start c2_default --eps 2/255
  start c8_e15 --eps 8/255 --train-eps-factor 1.5
  start c8_s3 --eps 8/255 --seed 3
  start c8_s4 --eps 8/255 --seed 4
  start c8_adv --eps 8/255 --adv-ce 1 --epochs 40
  while [ $(( $(date +%s) - T0 )) -lt ${DEADLINE:-420} ] && pgrep -f "hamverify.cli train-small" > /dev/null; do sleep 10; done
  progress
  pkill -TERM -f "hamverify.cli train-small"; sleep 8
  python3 benchmarks/pack_runs.py $OUT $R/m3_* $R/m1_* $R/f1_* $R/c2_default $R/c8_* $R/c_rs
  ;;
*) echo "usage: gpu_round3.sh mnist|stage|cifar"; exit 2 ;;
esac
