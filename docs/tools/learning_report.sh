#!/usr/bin/env bash
# The learning report of issue 9, as one harness: MJX HalfCheetah, cpu preset, 100k env steps,
# 4 seeds each of --guide=none, sag, eag and --model_free --agent=ppo, and 2 seeds of the
# oracle-imagination diagnostic. Every run is one process with its seeds vmapped.
#
#   bash docs/tools/learning_report.sh [OUT [FIRST_SEED]]     (default runs/report9, seed 100)
#
# Runs go one after the other, into OUT/<name>. Run it again to go on where it stopped: a run
# with a summary.json of the full budget is skipped, a run cut short is --resume'd from its
# newest checkpoint. OUT/harness.log records each command with its start and end time.
# ONLY="eag oracle" runs just the named runs (e.g. two harnesses side by side on disjoint runs).
# Afterwards: python -m agdjax.compare OUT/sag OUT/none OUT/eag OUT/ppo OUT/oracle --out OUT/report
set -u
OUT=${1:-runs/report9}
SEED=${2:-100}
STEPS=100000
PY=${PYTHON:-python}
RUNS="sag none ppo eag oracle"
for name in ${ONLY:-}; do
  [[ " $RUNS " == *" $name "* ]] || { echo "ONLY: unknown run '$name' (allowed, space-separated: $RUNS)" >&2; exit 2; }
done
mkdir -p "$OUT"
COMMON=(--preset=cpu --backend=mjx --total_env_steps=$STEPS --seed=$SEED --progress_every_s=120)

run() {  # run NAME NUM_SEEDS FLAGS...
  local name=$1 n=$2; shift 2
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then return 0; fi
  local dir="$OUT/$name"
  if [ -f "$dir/summary.json" ] && grep -q "\"final_env_steps\": $STEPS" "$dir/summary.json"; then
    echo "$(date -Is) skip $name: complete" >> "$OUT/harness.log"; return 0
  fi
  local resume=()
  [ -f "$dir/config.json" ] && resume=(--resume)
  local cmd=("$PY" -m experiments.halfcheetah "${COMMON[@]}" --num_seeds="$n" --logdir="$dir" "$@" "${resume[@]}")
  echo "$(date -Is) start $name: ${cmd[*]}" >> "$OUT/harness.log"
  "${cmd[@]}" >> "$OUT/$name.log" 2>&1
  echo "$(date -Is) end $name: exit $?" >> "$OUT/harness.log"
}

run sag 4 --guide=sag
run none 4 --guide=none
run ppo 4 --model_free --agent=ppo
run eag 4 --guide=eag
run oracle 2 --imagination=oracle --guide=none
