#!/usr/bin/env bash
# The paper's ablations (issue 15 item 4, docs/ABLATIONS.md): its Table 3 (stability term only,
# Hamming term only, both) and Table 4 (the dense regularizer of Eq. 14 against the sparse one) on
# CIFAR-10 at 8/255, for the Hamming default hv-gs8-gh3000, all with the same compressed 10-epoch
# schedule (the paper: 100 epochs, on a PreActResNet18), on the 2-core CPU machine, one after another.
# Then each model is measured: hamverify evaluate (clean, PGD-20 x 10, 500 test images) and
# hamverify stats (unstable ReLUs under interval and symbolic bounds, 500 test images), as JSON beside
# the run; scripts/ablation_tables.py turns them into docs/ABLATIONS.md's tables.
# A finished run is skipped, an interrupted one resumed with
#   hamverify train-small --resume runs/abl15/NAME/last.pt --out runs/abl15/NAME
# and a measurement is redone only when its JSON is missing.
# hv_none, neither term (the same schedule and selection, plain CE), is a reference row of ours.
# Usage: bash benchmarks/ablation15.sh [NAME...]   (default: all five, in the order below)
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
export HAMVERIFY_DATA=${HAMVERIFY_DATA:-$(cd .. && pwd)/shared/data}
HV=${HV:-.venv/bin/hamverify}
EPOCHS=${EPOCHS:-10}
D=runs/abl15
mkdir -p "$D"
COMMON=(--dataset cifar10 --eps 8/255 --epochs "$EPOCHS")
declare -A ARGS=(
  [hv_both]="--recipe hv-gs8-gh3000"
  [hv_stability-only]="--recipe hv-stability-only"
  [hv_hamming-only]="--recipe hv-hamming-only"
  [hv_dense]="--recipe hv-gs8-gh3000 --reg hamming-dense"
  [hv_none]="--recipe hv-gs8-gh3000 --reg none"
)
ORDER=(hv_both hv_stability-only hv_hamming-only hv_dense hv_none)
run() {  # NAME ARGS...: skip a finished run, resume an interrupted one
  local name=$1; shift
  local out=$D/$name
  if [ -f "$out/model.pt" ]; then echo "done: $name"; return; fi
  echo "training: $name ($(date -u +%H:%M))"
  if [ -f "$out/last.pt" ]; then
    "$HV" train-small --resume "$out/last.pt" --out "$out" --quiet >> "$D/$name.log" 2>&1
  else
    "$HV" train-small "$@" --quiet --out "$out" > "$D/$name.log" 2>&1
  fi
}
measure() {  # NAME: evaluate + stats JSON, each only when missing
  local name=$1 model=$D/$1/model.pt
  [ -f "$model" ] || return 0
  if [ ! -s "$D/$name.evaluate.json" ]; then
    "$HV" evaluate --model "$model" --count 500 --json > "$D/$name.evaluate.json.tmp" && mv "$D/$name.evaluate.json.tmp" "$D/$name.evaluate.json"
  fi
  if [ ! -s "$D/$name.stats.json" ]; then
    "$HV" stats --model "$model" --count 500 --json --quiet > "$D/$name.stats.json.tmp" && mv "$D/$name.stats.json.tmp" "$D/$name.stats.json"
  fi
}
names=("$@"); [ ${#names[@]} -gt 0 ] || names=("${ORDER[@]}")
for name in "${names[@]}"; do
  [ -n "${ARGS[$name]+x}" ] || { echo "unknown run $name (known: ${ORDER[*]})" >&2; exit 2; }
  # shellcheck disable=SC2086
  run "$name" "${COMMON[@]}" ${ARGS[$name]}
  measure "$name"
done
