"""Respaced sampling: speed against fidelity on a trained world model.

    python -m benchmarks.respacing RUN_DIR [--steps=16,8,4] [--batch=256] [--repeats=3] [--out=PATH]

For each K in --steps, the run's newest checkpoint imagines with K reverse steps of its
T-step model (`--sampling_steps=K`, `diffusion.respace`) and reports:
- imagination transitions/s (the learner's batch, `phases["imagine"]`, best of --repeats
  timed calls after one warm-up, every seed of the run vmapped);
- the world-model error against the simulator (agdjax/wm_error.py) on --batch replayed start
  states per seed, the same start states and noise for every K: raw-state MSE at imagined
  step 1 and H-1, reward MSE, advantage correlation.
The checkpoint's action-guidance scale delta is a per-step pull learned at T steps; at K
steps it is scaled by T/K, as the initial delta is (Config.delta_init), so that the pull over
the whole chain stays the same. Writes a JSON file (default RUN_DIR/respacing.json) and
prints a markdown table.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

from benchmarks.cli import fail


def measure(run_dir: str, steps, batch: int = 256, repeats: int = 3, key: int = 0) -> dict:
    """{K: {transitions_per_s, s_per_call, compile_s, wm metrics (mean over seeds)}} and the
    checkpoint's description under "_checkpoint"."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from agdjax.train import make_train
    from agdjax.wm_error import load_run

    cfg, seeds, restored = load_run(run_dir)
    if cfg.model_free:
        raise ValueError(f"{run_dir} is a model-free run: it has no world model")
    keys = jax.random.split(jax.random.PRNGKey(key), len(seeds))
    out = {"_checkpoint": {"step": restored.step, "env_steps": restored.driver.get("env_steps"), "seeds": seeds,
                           "n_diffusion_steps": cfg.n_diffusion_steps}}
    for k in steps:
        c = dataclasses.replace(cfg, sampling_steps=None if k == cfg.n_diffusion_steps else k,
                                wm_error_batch=batch)
        state = restored.state.replace(log_delta=restored.state.log_delta + jnp.log(cfg.n_sampling_steps / k))
        prog = make_train(c)
        wm = jax.jit(jax.vmap(prog.phases["wm_error"]))(state, keys)
        imagine = jax.jit(jax.vmap(prog.phases["imagine"]))
        t0 = time.perf_counter()
        jax.block_until_ready(imagine(state, keys))
        compile_s = time.perf_counter() - t0
        times = []
        for r in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(imagine(state, jax.random.split(jax.random.PRNGKey(100 + r), len(seeds))))
            times.append(time.perf_counter() - t0)
        t = min(times)
        out[k] = {"transitions_per_s": len(seeds) * c.agent_batch * c.horizon / t, "s_per_call": t,
                  "compile_s": compile_s, **{m: float(np.nanmean(np.asarray(v))) for m, v in wm.items()}}
    return out


def table(res) -> str:
    ks = sorted((k for k in res if not str(k).startswith("_")), key=int, reverse=True)
    top = res[ks[0]]
    lines = ["| K | transitions/s | speed-up | state error, step 1 | state error, step H-1 | reward error "
             "| advantage corr |", "|---|---|---|---|---|---|---|"]
    for k in ks:
        m = res[k]
        lines.append(f"| {k} | {m['transitions_per_s']:.0f} | {m['transitions_per_s'] / top['transitions_per_s']:.2f} "
                     f"| {m['wm_state_error_1']:.4g} ({m['wm_state_error_1'] / top['wm_state_error_1']:.2f}×) "
                     f"| {m['wm_state_error_last']:.4g} ({m['wm_state_error_last'] / top['wm_state_error_last']:.2f}×) "
                     f"| {m['wm_reward_error']:.4g} | {m['wm_advantage_corr']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.respacing", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--steps", default=None, help="comma-separated K values (default: T, T/2, T/4)")
    p.add_argument("--batch", type=int, default=256, help="start states per seed for the world-model error")
    p.add_argument("--repeats", type=int, default=3, help="timed imagination calls per K")
    p.add_argument("--out", default=None, help="JSON path (default RUN_DIR/respacing.json)")
    a = p.parse_args(argv)

    if not os.path.isfile(os.path.join(a.run_dir, "config.json")):
        return fail(f"{a.run_dir} holds no run (no config.json)")
    if a.batch <= 0 or a.repeats <= 0:
        return fail(f"--batch={a.batch} and --repeats={a.repeats} must be positive integers")
    with open(os.path.join(a.run_dir, "config.json")) as f:
        total = json.load(f)["config"]["n_diffusion_steps"]
    try:
        steps = [int(s) for s in a.steps.split(",")] if a.steps else sorted({total, max(1, total // 2),
                                                                          max(1, total // 4)}, reverse=True)
    except ValueError:
        return fail(f"--steps={a.steps!r}: give integers separated by commas, e.g. 16,8,4")
    if any(not 1 <= k <= total for k in steps):
        return fail(f"--steps={a.steps!r}: every K must be in 1..{total} (the run's number of diffusion steps)")
    try:
        res = measure(a.run_dir, steps, a.batch, a.repeats)
    except (ValueError, OSError) as e:
        return fail(f"{a.run_dir}: {e}")
    out = a.out or os.path.join(a.run_dir, "respacing.json")
    with open(out, "w") as f:
        json.dump({str(k): v for k, v in res.items()}, f, indent=1)
    ck = res["_checkpoint"]
    print(f"checkpoint at env step {ck['env_steps']}, seeds {ck['seeds']}, T = {ck['n_diffusion_steps']}; "
          f"{a.batch} start states per seed; raw-state MSE (mean over dimensions)")
    print(table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
