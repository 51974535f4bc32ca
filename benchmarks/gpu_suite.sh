#!/usr/bin/env bash
# The GPU measurements of issue 11, one after the other inside one time budget, each step
# writing its own JSON/log into RESULTS, so that whatever finished survives a cut-off:
#
#   bash benchmarks/gpu_suite.sh RESULTS [BUDGET_S]        (default budget 1500 s)
#
# Steps, in order of priority (a step gets min(its cap, the time left); none starts with
# under 30 s left):
#   info      nvidia-smi, jax devices, package versions (always)
#   tp_fp32   benchmarks.throughput --preset=paper, imagination (every guide) + denoiser
#             training + matmul peaks, fp32
#   tp_bf16   the same with --denoiser_dtype=bfloat16
#   seeds     end-to-end seed scaling, 1, 8 and 32 seeds in one process (one paper-preset
#             iteration per timed chunk; the JSON is rewritten after each compile and timing,
#             so a cut-off keeps the counts done and their scaling efficiency)
#   run8      python -m experiments.halfcheetah --preset=paper --num_seeds=8 --guide=sag, cut
#             off by its cap: its metrics.jsonl rows and progress lines give the rate
#   memory    benchmarks.memory --preset=paper --num_seeds=2,8 (the GPU compile's analysis)
# STEPS="seeds memory" runs only the named steps (default: all). On an H100 (2026-11-23) the
# paper program with 8 seeds compiled in 258 s and an iteration took 45.0 s; 32 seeds will
# take longer, so give `seeds` most of a lease. PYTHON (default python3) runs everything;
# PRESET (default paper) and BACKEND (default mjx) shrink it for a check, e.g.
# PRESET=smoke BACKEND=positional bash benchmarks/gpu_suite.sh /tmp/x 600 on a CPU.
set -u
RES=${1:?usage: gpu_suite.sh RESULTS [BUDGET_S]}
BUDGET=${2:-1500}
PY=${PYTHON:-python3}
PRESET=${PRESET:-paper}
BACKEND=${BACKEND:-mjx}
mkdir -p "$RES"
END=$(( $(date +%s) + BUDGET ))

log() { echo "$(date +%T) $*" | tee -a "$RES/suite.log"; }

step() {  # step NAME CAP_S COMMAND...
  local name=$1 cap=$2; shift 2
  if [ -n "${STEPS:-}" ] && [[ " $STEPS " != *" $name "* ]]; then return 0; fi
  local left=$(( END - $(date +%s) ))
  local t=$(( cap < left ? cap : left ))
  if (( t < 30 )); then log "skip $name: ${left}s left"; return 0; fi
  log "start $name (limit ${t}s): $*"
  local t0 rc
  t0=$(date +%s)
  timeout -k 10 "$t" "$@" > "$RES/$name.log" 2>&1
  rc=$?
  log "end $name: exit $rc after $(( $(date +%s) - t0 ))s"
}

TP=("$PY" -m benchmarks.throughput --preset="$PRESET" --backend="$BACKEND")
nvidia-smi > "$RES/info.txt" 2>&1
log "info: nvidia-smi exit $?"
"$PY" -c "import importlib.metadata as md, jax; print(jax.devices()); print({p: md.version(p) for p in \
('jax', 'jaxlib', 'flax', 'optax', 'chex', 'orbax-checkpoint', 'brax', 'mujoco', 'mujoco-mjx', 'distrax', 'rlax')})" \
  >> "$RES/info.txt" 2>&1
log "info: versions exit $?"
step tp_fp32 300 "${TP[@]}" --only=imagination,denoiser_training --out="$RES/tp_fp32.json"
step tp_bf16 240 "${TP[@]}" --only=imagination,denoiser_training --denoiser_dtype=bfloat16 \
  --out="$RES/tp_bf16.json"
step seeds 1200 "${TP[@]}" --only=seeds --seeds=1,8,32 --iters_per_chunk=1 --out="$RES/seeds.json"
step run8 420 "$PY" -m experiments.halfcheetah --preset="$PRESET" --backend="$BACKEND" --num_seeds=8 \
  --guide=sag --iters_per_chunk=1 --checkpoint_every=100000000 --progress_every_s=5 \
  --logdir="$RES/run8_$(date +%Y%m%d_%H%M%S)"
step memory 420 "$PY" -m benchmarks.memory --preset="$PRESET" --backend="$BACKEND" --num_seeds=2,8 \
  --phases= --out="$RES/memory_gpu_$PRESET.json"
log "done"
