# Shared by benchmarks/round*.sh (docs/TRAINING.md): the set-up of a training queue and its resumable
# `run` helper.  Source it from a round script after setting ROUND (the folder under runs/, e.g. r11).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
export HAMVERIFY_DATA=${HAMVERIFY_DATA:-$(cd .. && pwd)/shared/data}
HV=${HV:-.venv/bin/hamverify}
mkdir -p "runs/$ROUND"
run() {  # NAME ARGS...: skip a finished run, resume an interrupted one
  local name=$1; shift
  local out=runs/$ROUND/$name
  if [ -f "$out/model.pt" ]; then echo "done: $name"; return; fi
  if [ -f "$out/last.pt" ]; then
    "$HV" train-small --resume "$out/last.pt" --out "$out" --quiet >> "runs/$ROUND/$name.log" 2>&1
  else
    "$HV" train-small "$@" --quiet --out "$out" > "runs/$ROUND/$name.log" 2>&1
  fi
}
