#!/usr/bin/env bash
# Issue 9's lr-cap diagnostic: does lifting the actor's learning-rate cap speed up the learner
# on oracle data, on diffusion data, on both or on neither? MJX HalfCheetah, cpu preset,
# 100k env steps; three programs (`sag`, `none`, `--imagination=oracle`), each a sweep of
# `--actor_lr_max` over LRS with NUM_SEEDS seeds vmapped. Seeds start at FIRST_SEED, which must
# lie outside the learning report's seeds (100-103): the preset is not tuned on those.
#
#   bash docs/tools/lr_cap_diag.sh [OUT [FIRST_SEED [NUM_SEEDS]]]   (default runs/lrcap 200 8)
#
# PARALLEL=1 runs the three programs at once (one accelerator has room for all three); else
# one after the other. LRS (default 1e-4,3e-4,1e-3), STEPS (default 100000) and PYTHON
# override. OUT/harness.log records each command with its start and end time.
# Afterwards: python -m agdjax.compare OUT/sag OUT/none OUT/oracle --out OUT/report
set -u
OUT=${1:-runs/lrcap}
SEED=${2:-200}
N=${3:-8}
LRS=${LRS:-1e-4,3e-4,1e-3}
STEPS=${STEPS:-100000}
PY=${PYTHON:-python}
if (( SEED <= 103 && SEED + N > 100 )); then
  echo "seeds $SEED..$((SEED + N - 1)) overlap the report's seeds 100-103; pick others" >&2; exit 2
fi
mkdir -p "$OUT"
COMMON=(--preset=cpu --backend=mjx --total_env_steps="$STEPS" --seed="$SEED" --num_seeds="$N"
        --actor_lr_max="$LRS" --checkpoint_every="$STEPS" --progress_every_s=60)

run() {  # run NAME FLAGS...
  local name=$1; shift
  local cmd=("$PY" -m experiments.halfcheetah "${COMMON[@]}" --logdir="$OUT/$name" "$@")
  echo "$(date -Is) start $name: ${cmd[*]}" >> "$OUT/harness.log"
  "${cmd[@]}" >> "$OUT/$name.log" 2>&1
  local rc=$?
  echo "$(date -Is) end $name: exit $rc" >> "$OUT/harness.log"
}

if [ "${PARALLEL:-0}" = 1 ]; then
  run sag --guide=sag & run none --guide=none & run oracle --imagination=oracle --guide=none &
  wait
else
  run sag --guide=sag; run none --guide=none; run oracle --imagination=oracle --guide=none
fi
