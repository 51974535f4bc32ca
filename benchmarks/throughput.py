"""Samples per second: environment, collection, guided imagination, denoiser training,
end-to-end seed scaling, and achieved FLOP/s against a measured matmul peak.

    python -m benchmarks.throughput --quick            # CPU check in a few minutes
    python -m benchmarks.throughput --preset=paper     # on a GPU
    python -m benchmarks.throughput --preset=paper --seeds= --denoiser_dtype=bfloat16  # CPU

Writes JSON (--out, default benchmarks/results/throughput_<platform>_<preset>.json) and
prints a markdown table. Compile time is always reported apart from run time (AOT
lower/compile), run times are the best of a few calls after a warm-up.

FLOPs are the denoiser's (XLA cost analysis of one denoiser forward at the sampler's batch,
times the number of diffusion steps; of one x0-loss gradient at the training batch, times
the number of updates): cost analysis counts a `lax.scan` body once, so it cannot be taken
from the scanned phases themselves. Guides, policy and bookkeeping are left out, so the
fraction of peak is a lower bound of the work done.
"""
from __future__ import annotations

import dataclasses
import os
import time

import jax
import jax.numpy as jnp
from absl import app, flags

from agdjax import diffusion, envs, loop
from agdjax.config import GUIDES, make_config
from agdjax.train import make_modules
from benchmarks.cli import write_json, write_result
from benchmarks.timing import flops_of, matmul_peak, timed

flags.DEFINE_bool("quick", False, "small sizes: a CPU check in a few minutes")
flags.DEFINE_string("task", "halfcheetah", "task")
flags.DEFINE_string("backend", None, "Brax backend (default: mjx; positional with --quick)")
flags.DEFINE_string("preset", None, "preset (default: cpu; smoke with --quick)")
flags.DEFINE_string("denoiser_dtype", "float32", "float32 or bfloat16")
flags.DEFINE_list("seeds", None, "seed counts of the end-to-end section (default 1,2,4,8; 1,2 with "
                  "--quick); empty skips it")
flags.DEFINE_list("only", None, "measure only these sections: raw_env, collection, imagination, "
                  "denoiser_training, seeds (default: all)")
flags.DEFINE_integer("sampling_steps", None, "reverse steps of imagination K <= T (respaced; default T)")
flags.DEFINE_integer("iters_per_chunk", None, "iterations per timed chunk of the seeds section (default: "
                     "the preset's; 1 keeps a paper-preset chunk short on a GPU)")
flags.DEFINE_integer("diffusion_updates", 20, "denoiser updates per timed training call")
flags.DEFINE_string("out", None, "JSON path")
FLAGS = flags.FLAGS


_COMPILES = [0]


def _count_compiles(event, duration, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration":
        _COMPILES[0] += 1


jax.monitoring.register_event_duration_secs_listener(_count_compiles)


def denoiser_flops(cfg, prog, state):
    """(FLOPs of one denoiser forward at batch agent_batch, FLOPs of one x0-loss gradient at
    batch diffusion_batch), from XLA's cost analysis of the unscanned computations."""
    den = make_modules(cfg, prog.act_dim).denoiser
    params = jax.tree.map(lambda x: x[0], state.denoiser)
    d = prog.obs_dim + 2
    sched = diffusion.cosine_schedule(cfg.n_diffusion_steps, cfg.tau)

    def forward(p, x, a, t):
        return den.apply(p, x, a, t)

    def grad(p, x0, a, key):
        return jax.grad(lambda q: diffusion.x0_loss(lambda x, aa, t: den.apply(q, x, aa, t), sched, x0, a,
                                                      key, prog.obs_dim))(p)

    b, bt, h = cfg.agent_batch, cfg.diffusion_batch, cfg.horizon
    f = flops_of(jax.jit(forward).lower(params, jnp.zeros((b, h, d)), jnp.zeros((b, h, prog.act_dim)),
                                        jnp.zeros((b,), jnp.int32)).compile())
    g = flops_of(jax.jit(grad).lower(params, jnp.zeros((bt, h, d)), jnp.zeros((bt, h, prog.act_dim)),
                                     jax.random.PRNGKey(0)).compile())
    return f, g


def raw_env(cfg, n_envs_list, n_steps):
    """Brax's own vmapped `env.step` in a `lax.scan`, uniform random actions in [-1, 1] (the
    physics solver's work depends on the actions: zero actions are cheaper than a policy's)."""
    env = envs.make_env(cfg.task, cfg.backend)
    out = {}
    for n in n_envs_list:
        state = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(0), n))

        def rollout(s, key, n=n):
            def body(c, k):
                a = jax.random.uniform(k, (n, env.action_size), minval=-1.0, maxval=1.0)
                return jax.vmap(env.step)(c, a), None
            return jax.lax.scan(body, s, jax.random.split(key, n_steps))[0]

        c, t, _ = timed(rollout, state, jax.random.PRNGKey(1))
        out[str(n)] = {"steps_per_s": n * n_steps / t, "compile_s": c}
    return out


def collection(base, prog, state, keys, raw):
    """Collection-phase env steps/s: one seed as the CLI runs it (no seed vmap: resets
    computed only when an episode ends), and under a seed vmap (what each of several seeds
    gets: resets computed every step), each against Brax's raw rate `raw` at the same n_envs."""
    state0, key0 = jax.tree.map(lambda x: x[0], state), keys[0]
    c, t, _ = timed(prog.phases["collect"], state0, key0)
    _, t_v, _ = timed(jax.vmap(prog.phases["collect"]), state, keys)
    sps = base.env_steps_per_iter / t
    return {"steps_per_s": sps, "compile_s": c, "n_envs": base.n_envs, "ratio_to_raw": sps / raw,
            "steps_per_s_seed_vmap": base.env_steps_per_iter / t_v,
            "ratio_to_raw_seed_vmap": base.env_steps_per_iter / t_v / raw}


def imagination(base, state, keys, fwd_flops):
    """Imagined transitions/s of one sampler call per guide, and its cost against `none`."""
    res = {"batch": base.agent_batch, "horizon": base.horizon, "n_diffusion_steps": base.n_diffusion_steps,
           "sampling_steps": base.n_sampling_steps}
    for guide in GUIDES:
        cfg = dataclasses.replace(base, guide=guide)
        c, t, _ = timed(jax.vmap(loop.make_train(cfg).phases["imagine"]), state, keys)
        res[guide] = {"transitions_per_s": cfg.agent_batch * cfg.horizon / t, "s_per_call": t, "compile_s": c,
                      "denoiser_flops_per_call": fwd_flops * cfg.n_sampling_steps}
    for guide in GUIDES:
        res[guide]["cost_vs_none"] = res[guide]["s_per_call"] / res["none"]["s_per_call"]
    return res


def denoiser_training(base, state, keys, grad_flops, n_upd):
    """Windows/s of a call of `n_upd` denoiser updates: one seed as the CLI runs it (no seed
    vmap), and under a seed vmap of 1 (what each of several seeds runs; on XLA:CPU the vmapped
    update transposes and copies its weight-shaped arrays)."""
    cfg_d = dataclasses.replace(base, diffusion_steps_per_env_step=n_upd / base.env_steps_per_iter)
    phase = loop.make_train(cfg_d).phases["diffusion"]
    c, t, _ = timed(phase, jax.tree.map(lambda x: x[0], state), keys[0])
    _, t_v, _ = timed(jax.vmap(phase), state, keys)
    return {"windows_per_s": n_upd * base.diffusion_batch / t, "compile_s": c, "batch": base.diffusion_batch,
            "updates_per_call": n_upd, "flops_per_s": grad_flops * n_upd / t,
            "windows_per_s_seed_vmap": n_upd * base.diffusion_batch / t_v}


def one_seed_sections(base, only, res, quick):
    """Sections 1-4 (raw env, collection, imagination, denoiser training, matmul peaks and
    fractions of peak), one seed, into `res`."""
    if "raw_env" in only or "collection" in only:
        res["raw_env"] = raw_env(base, sorted({1, base.n_envs, 4 * base.n_envs}), 50 if quick else 200)
    prog, init, _ = loop.compile_program(base, 1, jax.devices()[:1])
    state = jax.block_until_ready(init(*loop.member_inputs(base, [{"seed": 0}])))
    keys = jax.random.split(jax.random.PRNGKey(1), 1)
    if "collection" in only:
        res["collection"] = collection(base, prog, state, keys, res["raw_env"][str(base.n_envs)]["steps_per_s"])
    if "imagination" not in only and "denoiser_training" not in only:
        return
    fwd_flops, grad_flops = denoiser_flops(base, prog, state)
    if "imagination" in only:
        res["imagination"] = imagination(base, state, keys, fwd_flops)
    if "denoiser_training" in only:
        res["denoiser_training"] = denoiser_training(base, state, keys, grad_flops, FLAGS.diffusion_updates)
    n = 1024 if quick else 4096
    peak32, peak16 = matmul_peak(jnp.float32, n), matmul_peak(jnp.bfloat16, n)
    res["matmul_peak_flops_per_s"] = {"float32": peak32, "bfloat16": peak16, "n": n,
                                      "note": "bfloat16: bf16 operands, f32 accumulation"}
    peak = peak16 if base.denoiser_dtype == "bfloat16" else peak32
    if "denoiser_training" in res:
        res["denoiser_training"]["fraction_of_peak"] = res["denoiser_training"]["flops_per_s"] / peak
    if "imagination" in res:
        sag = res["imagination"]["sag"]
        sag["flops_per_s"] = sag["denoiser_flops_per_call"] / sag["s_per_call"]
        sag["fraction_of_peak"] = sag["flops_per_s"] / peak


def seed_scaling(base, n_seeds, entry, checkpoint):
    """Fills `entry` with the end-to-end rate of `n_seeds` seeds: the compile of one chunk of
    base.iters_per_chunk iterations (an iteration with agent updates first), a warm-up call,
    then one timed call (the same executable: no recompile). Calls `checkpoint()` after the
    compile and after the timing."""
    L = base.iters_per_chunk
    first = base.agent_start_env_steps // base.env_steps_per_iter + 1  # an iteration with agent updates
    first = min(first, max(0, base.n_iters - 2 * L))
    _, init_n, chunk_n = loop.compile_program(base, n_seeds)
    sharding = loop.seed_sharding(n_seeds)
    keys, hp = loop.member_inputs(base, [{"seed": s} for s in range(n_seeds)], sharding)
    st = jax.block_until_ready(init_n(keys, hp))
    t0 = time.perf_counter()
    comp = chunk_n.lower(st, hp, jnp.int32(first)).compile()
    entry.update(compile_s=time.perf_counter() - t0, iters_per_chunk=L)
    print(f"{n_seeds} seeds: compiled in {entry['compile_s']:.1f} s", flush=True)
    checkpoint()
    compiles = _COMPILES[0]
    st, _ = comp(st, hp, jnp.int32(first))  # warm-up (donates st)
    jax.block_until_ready(st)
    t0 = time.perf_counter()
    st, m = comp(st, hp, jnp.int32(first + L))
    jax.block_until_ready(m)
    t = (time.perf_counter() - t0) / L
    entry.update({
        "env_steps_per_s": n_seeds * base.env_steps_per_iter / t,
        "imagined_transitions_per_s": n_seeds * base.agent_updates_per_iter * base.agent_batch * base.horizon / t,
        "s_per_iteration": t, "compiles_after_first_chunk": _COMPILES[0] - compiles})
    print(f"{n_seeds} seeds: {t:.2f} s per iteration", flush=True)
    checkpoint()


def scaling_efficiency(seeds: dict):
    """Sets t_1 * N / t_N on every timed seed count, once one seed is timed."""
    t1 = seeds.get("1", {}).get("s_per_iteration")
    for k, v in seeds.items():
        if t1 and "s_per_iteration" in v:
            v["scaling_efficiency"] = t1 * int(k) / v["s_per_iteration"]


def main(_):
    quick = FLAGS.quick
    preset = FLAGS.preset or ("smoke" if quick else "cpu")
    backend = FLAGS.backend or ("positional" if quick else "mjx")
    base = make_config(FLAGS.task, preset, backend=backend, guide="sag", denoiser_dtype=FLAGS.denoiser_dtype,
                       sampling_steps=FLAGS.sampling_steps, iters_per_chunk=FLAGS.iters_per_chunk)
    res = {"device": jax.devices()[0].device_kind, "platform": jax.default_backend(),
           "n_devices": jax.device_count(), "task": base.task, "backend": backend, "preset": preset,
           "denoiser_dtype": FLAGS.denoiser_dtype, "quick": quick,
           "date": time.strftime("%Y-%m-%d")}
    sections = ("raw_env", "collection", "imagination", "denoiser_training", "seeds")
    only = FLAGS.only or sections
    bad = [x for x in only if x not in sections]
    if bad:
        raise app.UsageError(f"--only={','.join(bad)} is not a section; choose from {', '.join(sections)}")
    out = FLAGS.out or os.path.join("benchmarks", "results", f"throughput_{res['platform']}_{preset}.json")
    if set(only) - {"seeds"}:
        one_seed_sections(base, only, res, quick)

    # 5. end-to-end seed scaling. The JSON is rewritten after each compile and each timing, so
    # a run cut off by a time limit keeps what it measured (a paper-preset compile takes
    # minutes on a GPU); a seed count that fails (e.g. out of memory) records its error.
    res["seeds"] = {}
    counts = [int(n) for n in (FLAGS.seeds if FLAGS.seeds is not None else (["1", "2"] if quick else ["1", "2", "4", "8"]))]
    for n_seeds in (counts if "seeds" in only else []):
        res["seeds"][str(n_seeds)] = entry = {}

        def checkpoint():
            scaling_efficiency(res["seeds"])
            write_json(res, out)
        try:
            seed_scaling(base, n_seeds, entry, checkpoint)
        except Exception as e:  # noqa: BLE001 - recorded, and the larger counts are still tried
            entry["error"] = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
            print(f"{n_seeds} seeds: {entry['error']}", flush=True)
            checkpoint()
    write_result(res, out, markdown(res))
    return 1 if any("error" in v for v in res["seeds"].values()) else 0


def markdown(res):
    """The JSON as a markdown table (the sections measured)."""
    lines = [f"device: {res['device']} ({res['platform']}), task {res['task']}, backend {res['backend']}, "
             f"preset {res['preset']}, denoiser {res['denoiser_dtype']}", "",
             "| measure | value | compile s |", "|---|---|---|"]
    for n, v in res.get("raw_env", {}).items():
        lines.append(f"| raw env steps/s, n_envs={n} | {v['steps_per_s']:.0f} | {v['compile_s']:.1f} |")
    if "collection" in res:
        c = res["collection"]
        lines.append(f"| collection steps/s, n_envs={c['n_envs']}, one seed (ratio to raw) | {c['steps_per_s']:.0f} "
                     f"({c['ratio_to_raw']:.2f}) | {c['compile_s']:.1f} |")
        lines.append(f"| collection steps/s under a seed vmap (ratio to raw) | {c['steps_per_s_seed_vmap']:.0f} "
                     f"({c['ratio_to_raw_seed_vmap']:.2f}) | |")
    if "imagination" in res:
        for g in GUIDES:
            v = res["imagination"][g]
            lines.append(f"| imagined transitions/s, guide={g} (cost vs none) | {v['transitions_per_s']:.0f} "
                         f"({v['cost_vs_none']:.2f}) | {v['compile_s']:.1f} |")
    if "denoiser_training" in res:
        d = res["denoiser_training"]
        lines.append(f"| denoiser training windows/s | {d['windows_per_s']:.0f} | {d['compile_s']:.1f} |")
        lines.append(f"| denoiser training windows/s, seed vmap of 1 | {d['windows_per_s_seed_vmap']:.0f} | |")
    if "matmul_peak_flops_per_s" in res:
        pk = res["matmul_peak_flops_per_s"]
        lines.append(f"| matmul peak GFLOP/s fp32 / bf16 (n={pk['n']}) | {pk['float32']/1e9:.0f} / "
                     f"{pk['bfloat16']/1e9:.0f} | |")
    if "denoiser_training" in res:
        lines.append(f"| denoiser training: fraction of peak | {res['denoiser_training']['fraction_of_peak']:.3f} | |")
    if "imagination" in res:
        lines.append(f"| sag imagination: fraction of peak | {res['imagination']['sag']['fraction_of_peak']:.3f} | |")
    for n, v in res.get("seeds", {}).items():
        if "s_per_iteration" not in v:
            lines.append(f"| {n} seeds: not timed ({v.get('error', 'cut off after the compile')}) | | "
                         f"{v.get('compile_s', float('nan')):.1f} |")
            continue
        lines.append(f"| {n} seeds: env steps/s, imagined transitions/s, scaling eff. | "
                     f"{v['env_steps_per_s']:.0f}, {v['imagined_transitions_per_s']:.0f}, "
                     f"{v.get('scaling_efficiency', float('nan')):.2f} | {v['compile_s']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    app.run(main)
