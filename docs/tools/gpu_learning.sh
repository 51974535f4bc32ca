#!/usr/bin/env bash
# Issue 9 on a lent GPU: the learning report's runs of the cpu preset (MJX HalfCheetah, 100k
# env steps), one process per arm with its seeds vmapped, all arms side by side on the one GPU
# (the harness of docs/tools/learning_report.sh, run in parallel); and, for
# issue 11 point 4, the paper preset's memory analysis of the GPU compile at N = 2 and N = 8
# (compile only, two processes beside the runs).
#
#   bash docs/tools/gpu_learning.sh RESULTS BUDGET_S [FIRST_SEED [NUM_SEEDS]]   (seed 300, 4 seeds)
#
# Arms: sag, none, eag, ppo (--model_free --agent=ppo), oracle (--imagination=oracle
# --guide=none) and sag_lastrow (sag --guide_last_row, the ablation of guidance.py's row-H-1
# zeroing; not in the default set).
# Every process is cut off by BUDGET_S (SIGTERM: a run stops cleanly, its metrics.jsonl
# keeps every finished chunk). Afterwards RESULTS/learning.tgz holds each run's
# metrics.jsonl, config.json, summary.json (when it finished) and log; RESULTS/memory_*.json
# the memory plans; RESULTS/suite.log the start and end of each process.
# ARMS="sag none" runs only the named arms; MEMORY=0 skips the memory analysis;
# PRESET=smoke BACKEND=positional STEPS=64 shrink it for a check on a CPU.
set -u
RES=${1:?usage: gpu_learning.sh RESULTS BUDGET_S [FIRST_SEED [NUM_SEEDS]]}
BUDGET=${2:?usage: gpu_learning.sh RESULTS BUDGET_S [FIRST_SEED [NUM_SEEDS]]}
SEED=${3:-300}
N=${4:-4}
PY=${PYTHON:-python3}
PRESET=${PRESET:-cpu}
BACKEND=${BACKEND:-mjx}
ARMS=${ARMS:-sag none eag ppo oracle}
STEPS=${STEPS:-100000}
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
mkdir -p "$RES/runs"
log() { echo "$(date +%T) $*" | tee -a "$RES/suite.log"; }

launch() {  # launch NAME COMMAND...: in the background, cut off after BUDGET s
  local name=$1; shift
  log "start $name: $*"
  ( timeout -s TERM -k 20 "$BUDGET" "$@" > "$RES/runs/$name.log" 2>&1; log "end $name: exit $?" ) &
}

{ nvidia-smi; "$PY" -c "import importlib.metadata as md, jax; print(jax.devices()); print({p: md.version(p) \
for p in ('jax', 'jaxlib', 'flax', 'optax', 'chex', 'orbax-checkpoint', 'brax', 'mujoco', 'mujoco-mjx', 'distrax')})"; } \
  > "$RES/info.txt" 2>&1
for arm in $ARMS; do
  case $arm in
    sag) flags=(--guide=sag) ;;
    none) flags=(--guide=none) ;;
    eag) flags=(--guide=eag) ;;
    ppo) flags=(--model_free --agent=ppo) ;;
    oracle) flags=(--imagination=oracle --guide=none) ;;
    sag_lastrow) flags=(--guide=sag --guide_last_row) ;;
    *) echo "ARMS: unknown arm '$arm' (allowed: sag none eag ppo oracle sag_lastrow)" >&2; exit 2 ;;
  esac
  launch "$arm" "$PY" -m experiments.halfcheetah --preset="$PRESET" --backend="$BACKEND" --seed="$SEED" \
    --num_seeds="$N" --total_env_steps="$STEPS" --checkpoint_every=100000000 --progress_every_s=20 --logdir="$RES/runs/$arm" "${flags[@]}"
done
if [ "${MEMORY:-1}" != 0 ]; then
  for n in 2 8; do
    launch "memory_n$n" "$PY" -m benchmarks.memory --preset=paper --backend="$BACKEND" --num_seeds=$n --phases= \
      --device_memory_gb=139 --out="$RES/memory_gpu_paper_n$n.json"
  done
fi
wait
log "all ended"
(cd "$RES/runs" && tar czf ../learning.tgz --exclude='checkpoints' --exclude='*.tfevents*' --exclude='tb' .)
log "packed $(du -h "$RES/learning.tgz" | cut -f1)"
