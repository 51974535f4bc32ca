"""Wall time of one training iteration and its split (env collection, diffusion training,
imagination + agent update, evaluation), each phase jitted and vmapped over seeds alone.

    python -m benchmarks.iteration_split --preset=cpu --num_seeds=1 [--backend=mjx]

Prints a markdown table and writes JSON (--out). Compile time is reported apart.
"""
from __future__ import annotations

import json
import time

import jax
from absl import app, flags

from agdjax.config import make_config
from agdjax import loop

flags.DEFINE_string("task", "halfcheetah", "task")
flags.DEFINE_string("preset", "cpu", "preset")
flags.DEFINE_string("backend", "mjx", "backend")
flags.DEFINE_string("guide", "sag", "guide")
flags.DEFINE_integer("num_seeds", 1, "seeds vmapped together")
flags.DEFINE_integer("repeats", 2, "timed repeats per phase")
flags.DEFINE_string("out", None, "JSON output path")
FLAGS = flags.FLAGS


def time_phase(fn, state, key, repeats):
    t0 = time.perf_counter()
    compiled = jax.jit(jax.vmap(fn)).lower(state, key).compile()
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(state, key))
        times.append(time.perf_counter() - t0)
    return compile_s, min(times)


def measure(cfg, n_seeds, repeats):
    prog, init, _ = loop.compile_program(cfg, n_seeds)
    state = jax.block_until_ready(init(*loop.member_inputs(cfg, [{"seed": s} for s in range(n_seeds)])))
    keys = jax.random.split(jax.random.PRNGKey(1), n_seeds)
    out = {}
    for name, fn in prog.phases.items():
        c, t = time_phase(fn, state, keys, repeats)
        out[name] = {"compile_s": c, "run_s": t}
    per_iter = sum(v["run_s"] for k, v in out.items() if k != "eval")
    evals_per_iter = cfg.env_steps_per_iter / cfg.eval_every
    out["iteration_s"] = per_iter + evals_per_iter * out["eval"]["run_s"]
    return out


def main(_):
    cfg = make_config(FLAGS.task, FLAGS.preset, backend=FLAGS.backend, guide=FLAGS.guide)
    res = measure(cfg, FLAGS.num_seeds, FLAGS.repeats)
    res["config"] = {"task": cfg.task, "preset": cfg.preset, "backend": cfg.backend, "guide": cfg.guide,
                     "num_seeds": FLAGS.num_seeds, "env_steps_per_iter": cfg.env_steps_per_iter,
                     "diffusion_updates_per_iter": cfg.diffusion_updates_per_iter,
                     "agent_updates_per_iter": cfg.agent_updates_per_iter,
                     "device": jax.devices()[0].device_kind}
    print(f"| phase | run s / iteration | compile s |  ({FLAGS.num_seeds} seeds, {cfg.preset}, {cfg.backend})")
    print("|---|---|---|")
    for k in ("collect", "diffusion", "agent", "eval"):
        print(f"| {k} | {res[k]['run_s']:.3f} | {res[k]['compile_s']:.1f} |")
    print(f"| iteration (eval amortised) | {res['iteration_s']:.3f} | |")
    if FLAGS.out:
        with open(FLAGS.out, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    app.run(main)
