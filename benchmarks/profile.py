"""Where the time goes: one guided reverse step and one denoiser update, part by part, in
float32 and bfloat16 side by side; and the bf16 guide against the fp32 one on a real batch.

    python -m benchmarks.profile [--preset=paper] [--guide=sag] [--repeats=5]
    python -m benchmarks.profile --run_dir=RUN     # also the bf16 guide on RUN's checkpoint

Random weights at the preset's sizes (the work of a reverse step or an update does not depend
on the values). Each part is jitted alone on the same inputs and timed as the best of
--repeats calls after a warm-up; "whole" is the unsplit step, and "rest" = whole - sum of
parts (what only the whole does: noise, the clamp, in-painting; minus what fusion across parts
saves; minus one call's dispatch overhead per part, which matters only at tiny sizes). FLOPs
from XLA's cost analysis of each part, against the measured matmul peak of its dtype
(bf16: bf16 operands, f32 sums): a part far under the peak is not matmul-bound.

Parts of the reverse step (agdjax/sampler.py, steps 1-5): denoiser (x0_hat), posterior,
policy step (actor forward, clip, log-prob ascent), state guide (critic forward and input
gradient). Parts of the denoiser update (agdjax/train.py, diffusion_update): replay windows,
normalise (pack), loss forward, loss gradient (forward + backward), Adam, EMA.

With --run_dir: the run's newest checkpoint (its first seed) imagines from replayed start
states with the fp32 sampler; at every reverse step the state-guide gradient and the policy
step are recomputed with bf16 networks from the same x_t, and their cosine similarity to the
fp32 ones is reported (min and mean over steps t >= 1).
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time


def _measure(parts: dict, args, repeats: int, peak: float, inside=()) -> dict:
    """{part: {s, share, gflop_per_s, fraction_of_peak}} of the functions in `parts` (each
    called as fn(*args)); "whole" is the unsplit computation; the parts named in `inside` are
    contained in another part and left out of "rest" = whole - sum of the others."""
    from benchmarks.timing import flops_of, timed
    out = {}
    for name, fn in parts.items():
        _, s, compiled = timed(fn, *args, repeats=repeats)
        f = flops_of(compiled)
        out[name] = {"s": s, "gflop_per_s": f / s / 1e9, "fraction_of_peak": f / s / peak}
    whole = out["whole"]["s"]
    out["rest"] = {"s": whole - sum(v["s"] for k, v in out.items() if k != "whole" and k not in inside)}
    for v in out.values():
        v["share"] = v["s"] / whole
    return out


def _nets(cfg, obs_dim, act_dim, key):
    """(modules, params) with random weights: {actor, critic, denoiser} params."""
    import jax
    import jax.numpy as jnp
    from agdjax.train import make_modules
    mods = make_modules(cfg, act_dim)
    k = jax.random.split(key, 3)
    o = jnp.zeros((1, obs_dim))
    params = {"actor": mods.actor.init(k[0], o), "critic": mods.critic.init(k[1], o),
              "denoiser": mods.denoiser.init(k[2], jnp.zeros((1, cfg.horizon, obs_dim + 2)),
                                             jnp.zeros((1, cfg.horizon, act_dim)), jnp.zeros((1,), jnp.int32))}
    return mods, params


def _sampler_fns(mods, actor_p, critic_p, denoiser_p):
    from agdjax.sampler import SamplerFns
    return SamplerFns(denoise=lambda x, a, t: mods.denoiser.apply(denoiser_p, x, a, t),
                      actor=lambda o: mods.guide_actor.apply(actor_p, o),
                      value=lambda o: mods.guide_critic.apply(critic_p, o), reward=None)


def _guidance(cfg, guide, delta):
    from agdjax import envs
    from agdjax.sampler import Guidance
    return Guidance(delta, guide, cfg.c if guide != "none" else 0.0, cfg.gamma, cfg.action_clip_sigmas,
                    cfg.clamp_last_steps, cfg.clamp_value, envs.REPLAY_ACTION_BOUND,
                    True, cfg.scale_action_input)


def reverse_step_parts(cfg, guide: str, repeats: int, peak: float, key: int = 0) -> dict:
    """Profile of one guided reverse step at batch agent_batch x horizon (module docstring)."""
    import jax
    import jax.numpy as jnp
    from agdjax import diffusion, envs, normalize
    from agdjax.guidance import policy_guided_actions, state_guide_gradient
    from agdjax.sampler import env_actions, reverse_step

    env = envs.make_env(cfg.task, cfg.backend)
    obs_dim, act_dim = envs.observation_size(env), env.action_size
    mods, p = _nets(cfg, obs_dim, act_dim, jax.random.PRNGKey(key))
    fns = _sampler_fns(mods, p["actor"], p["critic"], p["denoiser"])
    sched = diffusion.respace(diffusion.cosine_schedule(cfg.n_diffusion_steps, cfg.tau), cfg.n_sampling_steps)[0]
    norm = normalize.init(obs_dim, act_dim)
    g = _guidance(cfg, guide, jnp.float32(cfg.delta_init))
    b, h = cfg.agent_batch, cfg.horizon
    ks = jax.random.split(jax.random.PRNGKey(key + 1), 4)
    x_t = jax.random.normal(ks[0], (b, h, obs_dim + 2))
    a_t = jax.random.normal(ks[1], (b, h, act_dim))
    s0 = x_t[:, 0, :obs_dim]
    t_int = cfg.n_sampling_steps // 2
    tb = jnp.full((b,), t_int)

    def x0_hat_of(x, a):
        a_env = env_actions(norm, a, g.action_bound)[1]
        return diffusion.inpaint(fns.denoise(x, diffusion.scaled_actions(sched, a_env, tb, g.scale_actions), tb), s0)

    # every input is an argument of the jitted part: a closed-over array would be folded at compile time
    parts = {
        "denoiser": lambda x, a, x0: x0_hat_of(x, a),
        "posterior": lambda x, a, x0: diffusion.posterior(sched, x0, x, tb),
        "policy step": lambda x, a, x0: policy_guided_actions(
            fns.actor, norm.obs.unnormalize(x0[..., :obs_dim]), norm.action.unnormalize(a), g.delta,
            g.clip_sigmas, 1.0),
    }
    if guide != "none":
        parts["state guide"] = lambda x, a, x0: state_guide_gradient(
            guide, x0[..., :obs_dim], x0[..., -2], x0[..., -1], a, norm.obs, norm.reward, fns.value, fns.reward,
            g.gamma)
    parts["whole"] = lambda x, a, x0: reverse_step(fns, sched, norm, s0, g, x, a, t_int, ks[2])[:2]
    return _measure(parts, (x_t, a_t, x0_hat_of(x_t, a_t)), repeats, peak)


def denoiser_update_parts(cfg, repeats: int, peak: float, key: int = 0) -> dict:
    """Profile of one denoiser update at batch diffusion_batch (module docstring)."""
    import jax
    import jax.numpy as jnp
    import optax
    from agdjax import diffusion, envs, normalize
    from agdjax import replay as rb

    env = envs.make_env(cfg.task, cfg.backend)
    obs_dim, act_dim = envs.observation_size(env), env.action_size
    mods, p = _nets(cfg, obs_dim, act_dim, jax.random.PRNGKey(key))
    sched = diffusion.cosine_schedule(cfg.n_diffusion_steps, cfg.tau)
    replay = rb.init(cfg.n_envs, cfg.capacity_per_env, obs_dim, act_dim)
    replay = replay.replace(size=jnp.asarray(cfg.capacity_per_env, replay.size.dtype))
    norm = normalize.init(obs_dim, act_dim)
    tx = optax.adam(cfg.diffusion_lr)
    den, opt = p["denoiser"], tx.init(p["denoiser"])
    k_w, k_loss = jax.random.split(jax.random.PRNGKey(key + 1))
    w = rb.sample_windows(replay, k_w, cfg.diffusion_batch, cfg.horizon)
    x0, acts = normalize.pack(norm, w.obs, w.reward, w.terminal), norm.action.normalize(w.action)

    def loss(q, x, a):
        return diffusion.x0_loss(lambda xx, aa, t: mods.denoiser.apply(q, xx, aa, t), sched, x, a, k_loss, obs_dim,
                                 cfg.scale_action_input)

    grad = jax.grad(loss)(den, x0, acts)

    def ema(params, e):
        return optax.incremental_update(params, e, 1.0 - cfg.ema_decay)

    def whole(q, o, e, rp):
        ww = rb.sample_windows(rp, k_w, cfg.diffusion_batch, cfg.horizon)
        xx, aa = normalize.pack(norm, ww.obs, ww.reward, ww.terminal), norm.action.normalize(ww.action)
        gr = jax.grad(loss)(q, xx, aa)
        upd, o = tx.update(gr, o, q)
        q = optax.apply_updates(q, upd)
        return q, o, ema(q, e)

    # every input is an argument (a closed-over array would be folded at compile time)
    parts = {
        "replay windows": lambda q, o, e, rp, w, x0, acts, gr: rb.sample_windows(rp, k_w, cfg.diffusion_batch,
                                                                                   cfg.horizon),
        "normalise": lambda q, o, e, rp, w, x0, acts, gr: (normalize.pack(norm, w.obs, w.reward, w.terminal),
                                                            norm.action.normalize(w.action)),
        "loss forward": lambda q, o, e, rp, w, x0, acts, gr: loss(q, x0, acts),
        "loss gradient": lambda q, o, e, rp, w, x0, acts, gr: jax.grad(loss)(q, x0, acts),
        "Adam": lambda q, o, e, rp, w, x0, acts, gr: optax.apply_updates(q, tx.update(gr, o, q)[0]),
        "EMA": lambda q, o, e, rp, w, x0, acts, gr: ema(q, e),
        "whole": lambda q, o, e, rp, w, x0, acts, gr: whole(q, o, e, rp),
    }
    res = _measure(parts, (den, opt, den, replay, w, x0, acts, grad), repeats, peak, inside=("loss forward",))
    res["windows_per_s"] = {"s": cfg.diffusion_batch / res["whole"]["s"]}
    return res


def guide_cosines(run_dir: str, batch: int = 256, key: int = 0) -> dict:
    """Cosine similarity of the bf16 state-guide gradient and policy step to the fp32 ones
    along the fp32 reverse chain of RUN's newest checkpoint, first seed, `batch` replayed
    start states: {"state_guide": [per step t = K-1 .. 0], "policy_step": [...], meta}."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from agdjax import diffusion, envs
    from agdjax import replay as rb
    from agdjax.guidance import policy_guided_actions, state_guide_gradient
    from agdjax.sampler import env_actions, reverse_step
    from agdjax.train import make_modules
    from agdjax.wm_error import load_run

    cfg, seeds, restored = load_run(run_dir)
    if cfg.model_free or cfg.guide not in ("sag", "eag"):
        raise ValueError(f"{run_dir}: guide {cfg.guide!r}; this measure needs a sag or eag run")
    st = jax.tree.map(lambda x: x[0], restored.state)
    act_dim = st.replay.data.action.shape[-1]
    fns = {d: _sampler_fns(make_modules(dataclasses.replace(cfg, denoiser_dtype=d), act_dim), st.agent.actor,
                           st.agent.critic, st.denoiser_ema) for d in ("float32", "bfloat16")}
    sched, timesteps = diffusion.respace(diffusion.cosine_schedule(cfg.n_diffusion_steps, cfg.tau),
                                         cfg.n_sampling_steps)
    norm, g = st.norm, _guidance(cfg, cfg.guide, jnp.exp(st.log_delta))
    k_s, k_x, k_a, k_loop = jax.random.split(jax.random.PRNGKey(key), 4)
    s0_raw = rb.sample_starts(st.replay, k_s, batch)[0]
    obs_dim = s0_raw.shape[-1]
    s0 = norm.obs.normalize(s0_raw)
    cos = lambda x, y: jnp.vdot(x, y) / (jnp.linalg.norm(x) * jnp.linalg.norm(y))

    def body(carry, inputs):
        x, a = carry
        t, k, model_t = inputs
        tb, tm = jnp.full((batch,), t), jnp.full((batch,), model_t)
        a_env = env_actions(norm, a, g.action_bound)[1]
        x0 = diffusion.inpaint(fns["float32"].denoise(x, diffusion.scaled_actions(sched, a_env, tb, g.scale_actions),
                                                      tm), s0)
        s_hat = x0[..., :obs_dim]
        a_raw = norm.action.unnormalize(a)
        grad = {d: state_guide_gradient(cfg.guide, s_hat, x0[..., -2], x0[..., -1], a_raw, norm.obs, norm.reward,
                                        f.value, None, g.gamma) for d, f in fns.items()}
        step = {d: policy_guided_actions(f.actor, norm.obs.unnormalize(s_hat), a_raw, g.delta, g.clip_sigmas,
                                         1.0)[0] - a_raw for d, f in fns.items()}
        x, a, _ = reverse_step(fns["float32"], sched, norm, s0, g, x, a, t, k, model_t)
        return (x, a), (cos(grad["bfloat16"], grad["float32"]), cos(step["bfloat16"], step["float32"]))

    x = diffusion.inpaint(jax.random.normal(k_x, (batch, cfg.horizon, obs_dim + 2)), s0)
    a = jax.random.normal(k_a, (batch, cfg.horizon, act_dim))
    ts = jnp.arange(sched.betas.shape[0] - 1, -1, -1)
    _, (c_guide, c_step) = jax.jit(lambda x, a: jax.lax.scan(
        body, (x, a), (ts, jax.random.split(k_loop, ts.shape[0]), jnp.asarray(timesteps)[ts])))(x, a)
    c_guide, c_step = np.asarray(c_guide), np.asarray(c_step)
    return {"state_guide": c_guide.tolist(), "policy_step": c_step.tolist(),
            "state_guide_min": float(c_guide[:-1].min()), "state_guide_mean": float(c_guide[:-1].mean()),
            "policy_step_min": float(c_step[:-1].min()), "policy_step_mean": float(c_step[:-1].mean()),
            "run_dir": run_dir, "seed": seeds[0], "env_steps": restored.driver.get("env_steps"),
            "guide": cfg.guide, "batch": batch}


def _table(title: str, parts: dict) -> str:
    lines = [f"{title}", "", "| part | ms | share | GFLOP/s | of peak |", "|---|---|---|---|---|"]
    for name, v in parts.items():
        if "share" not in v:
            continue
        fl = f"{v['gflop_per_s']:.0f} | {v['fraction_of_peak']:.2f}" if "gflop_per_s" in v else " | "
        lines.append(f"| {name} | {1e3 * v['s']:.2f} | {v['share']:.2f} | {fl} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    from benchmarks.cli import Parser, UsageError, fail, write_result
    p = Parser(prog="python -m benchmarks.profile", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="paper")
    p.add_argument("--task", default="halfcheetah")
    p.add_argument("--guide", default="sag", help="guide of the profiled reverse step: none, sag or eag")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--run_dir", default=None, help="a sag/eag run: the bf16 guide's cosine on its checkpoint")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/profile_<platform>_<preset>.json)")
    try:
        a = p.parse_args(argv)
    except UsageError as e:
        return fail(e)
    from agdjax.config import PRESETS, TASKS
    for name, value, allowed in (("--preset", a.preset, PRESETS), ("--task", a.task, TASKS),
                                 ("--guide", a.guide, ("none", "sag", "eag"))):
        if value not in allowed:
            return fail(f"{name}={value!r} is not one of {', '.join(allowed)}")
    if a.repeats < 1:
        return fail(f"--repeats={a.repeats} must be at least 1")
    if a.run_dir and not os.path.isfile(os.path.join(a.run_dir, "config.json")):
        return fail(f"--run_dir={a.run_dir}: no run there (no config.json)")
    import jax
    import jax.numpy as jnp
    from agdjax.config import make_config
    from benchmarks.timing import matmul_peak

    res = {"device": jax.devices()[0].device_kind, "platform": jax.default_backend(), "preset": a.preset,
           "task": a.task, "guide": a.guide, "date": time.strftime("%Y-%m-%d"), "load_average": os.getloadavg()}
    n = 2048 if a.preset == "paper" else 512
    for dtype in ("float32", "bfloat16"):
        cfg = make_config(a.task, a.preset, guide=a.guide, denoiser_dtype=dtype)
        peak = matmul_peak(jnp.bfloat16 if dtype == "bfloat16" else jnp.float32, n)
        res[dtype] = {"matmul_peak_gflop_per_s": peak / 1e9,
                      "reverse_step": reverse_step_parts(cfg, a.guide, a.repeats, peak),
                      "denoiser_update": denoiser_update_parts(cfg, a.repeats, peak)}
        print(_table(f"{dtype}: one reverse step, guide {a.guide}, batch {cfg.agent_batch} x {cfg.horizon} "
                     f"(peak {peak / 1e9:.0f} GFLOP/s)", res[dtype]["reverse_step"]))
        print(_table(f"{dtype}: one denoiser update, batch {cfg.diffusion_batch} "
                     f"({res[dtype]['denoiser_update']['windows_per_s']['s']:.0f} windows/s)",
                     res[dtype]["denoiser_update"]))
    if a.run_dir:
        try:
            res["guide_cosine"] = c = guide_cosines(a.run_dir)
        except (ValueError, OSError) as e:
            return fail(f"--run_dir={a.run_dir}: {e}")
        print(f"bf16 guide on {a.run_dir} (seed {c['seed']}, {c['env_steps']} env steps): cosine to fp32, "
              f"state guide min {c['state_guide_min']:.4f} mean {c['state_guide_mean']:.4f}; "
              f"policy step min {c['policy_step_min']:.4f} mean {c['policy_step_mean']:.4f}")
    res["load_average_after"] = os.getloadavg()
    out = a.out or os.path.join("benchmarks", "results", f"profile_{res['platform']}_{a.preset}.json")
    write_result(res, out, "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
