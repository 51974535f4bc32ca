"""World-model fidelity against the simulator (PolyGRAD's trajectory error, DESIGN §1
'World-model fidelity').

From real start states with their stored simulator state, imagine H-step trajectories with
the run's sampler (policy guidance plus the state guide), replay the imagined actions
open-loop in the simulator from the same simulator state, and compare raw states and
rewards. Inside the compiled program this runs with every evaluation (`train.make_train`,
phase `wm_error`), logged as `wm_state_error_1`, `wm_state_error_last`, `wm_reward_error`,
`wm_advantage_corr` (`advantage_corr`: do imagined advantages agree with the true ones) and
`wm_action_cost_ratio` (`action_cost_ratio`: does the imagined reward charge an action's size
as the simulator does). With them, `guide_state_shift` and `guide_advantage_gain`
(`guide_effect`: what the state guide changes in the trajectories, against the same sampler
without it).
"""
from __future__ import annotations

import jax.numpy as jnp

from agdjax.guidance import one_step_advantage

WM_METRICS = ("wm_state_error_1", "wm_state_error_last", "wm_reward_error", "wm_advantage_corr",
              "wm_action_cost_ratio", "guide_state_shift", "guide_advantage_gain")


def trajectory_errors(im_obs, im_reward, sim_obs, sim_reward, im_terminal=None):
    """Per-step errors of imagined against simulated trajectories, raw units.

    im_obs / sim_obs [B, H, obs_dim] (row 0 is the shared real start state), im_reward /
    sim_reward [B, H-1] (reward of transition k), im_terminal [B, H] imagined terminal flags
    (optional: transitions after an imagined termination are left out).
    Returns {'wm_state_error_1': MSE at step 1, 'wm_state_error_last': MSE at step H-1 (mean
    over dimensions, then trajectories), 'wm_reward_error': mean squared reward error over
    transitions 0 … H-2}, and 'wm_state_error' [H] (step 0 is 0).
    Source: PolyGRAD `utils/errors.compute_traj_errors`.
    """
    per_step = ((im_obs - sim_obs) ** 2).mean(-1)  # [B, H]
    r_err = (im_reward - sim_reward) ** 2  # [B, H-1]
    if im_terminal is None:
        w_s, w_r = jnp.ones_like(per_step), jnp.ones_like(r_err)
    else:  # state k is valid while no transition before it terminated
        alive = jnp.cumprod(1.0 - im_terminal[:, :-1], axis=1)
        w_s = jnp.concatenate([jnp.ones_like(alive[:, :1]), alive], 1)
        w_r = w_s[:, :-1]
    def mean(err, w, axis=None):  # NaN where no trajectory is still alive
        n = w.sum(axis)
        return jnp.where(n > 0, (err * w).sum(axis) / jnp.maximum(n, 1e-12), jnp.nan)

    step = mean(per_step, w_s, 0)
    return {"wm_state_error_1": step[1], "wm_state_error_last": step[-1],
            "wm_reward_error": mean(r_err, w_r), "wm_state_error": step}


def advantage_corr(value_fn, gamma: float, im_obs, im_reward, im_terminal, sim_obs, sim_reward, sim_terminal):
    """How well imagination ranks what the learner is trained on: the Pearson correlation,
    over trajectories, of the H-step advantage estimate
        A = sum_{k<H-1} gamma^k r_k + gamma^(H-1) V(s_{H-1}) - V(s_0)
    from the imagined trajectory with the same estimate from the simulator's replay of its
    actions (same start state, same critic). 1: imagination orders the start-state/action
    pairs as the simulator does. Both estimates share the -V(s_0) term, so a model whose
    returns carry no information still scores above 0 where V varies over the start states.
    (The learner itself uses GAE with the target critic; this is its H-step, lambda = 1 form.)

    im_obs / sim_obs [B, H, obs_dim] raw (row 0 shared), im_reward / sim_reward [B, H-1],
    im_terminal [B, H], sim_terminal [B, H-1] (0/1); value_fn raw obs [..., obs_dim] -> [...].
    Trajectories that terminate in either are left out; NaN when fewer than 3 remain or an
    estimate is constant. Ours (no reference counterpart): the diagnostic of docs/RESULTS.md.
    """
    h = im_obs.shape[1]
    disc = gamma ** jnp.arange(h - 1, dtype=jnp.float32)
    v0 = value_fn(im_obs[:, 0])

    def estimate(obs, reward):
        return (reward * disc).sum(1) + gamma ** (h - 1) * value_fn(obs[:, -1]) - v0

    keep = (im_terminal[:, :-1].sum(1) + sim_terminal.sum(1)) == 0
    n = keep.sum()

    def centred(a):  # excluded trajectories are 0 even when their estimate is not finite
        a = jnp.where(keep, a, 0.0)
        return jnp.where(keep, a - a.sum() / jnp.maximum(n, 1), 0.0)

    c_im, c_sim = centred(estimate(im_obs, im_reward)), centred(estimate(sim_obs, sim_reward))
    denom = jnp.sqrt((c_im ** 2).sum()) * jnp.sqrt((c_sim ** 2).sum())  # no float32 overflow of the product
    ok = (n >= 3) & (denom > 0) & jnp.isfinite(denom)
    return jnp.where(ok, (c_im * c_sim).sum() / jnp.where(ok, denom, 1.0), jnp.nan)


def action_cost_ratio(action, im_reward, sim_reward, im_terminal, sim_terminal):
    """Does the imagined reward depend on the action's size as the simulator's does?

    Least-squares slope of the imagined reward on the action cost c_k = -sum_j a_kj^2 of the
    same transition, over the slope of the simulator's reward (the open-loop replay of the
    same actions) on it: 1 when the world model charges large actions as the simulator does,
    0 when an action's size leaves the imagined reward unchanged. The ratio needs no task
    constant (HalfCheetah charges 0.1 c_k, Reacher 1.0 c_k). Both slopes also carry what c_k
    shares with the rest of the reward (a larger action moves the body more), so read it as
    a comparison of the two rewards' response to the same actions, not as the control-cost
    weight itself.

    action [B, H-1, act_dim] (the actions replayed, rows 0 … H-2, as the simulator was given
    them: clipped under env_action 'clipped', envs.clip_action), im_reward / sim_reward
    [B, H-1], im_terminal [B, H], sim_terminal [B, H-1] (0/1): a transition counts while
    neither trajectory has terminated before it. NaN when fewer than 3 transitions count or
    the simulator's slope is not positive (its reward then does not charge the action).
    Ours (no reference counterpart): docs/RESULTS.md, "Why the agent did not learn", point 3.
    """
    cost = -(action ** 2).sum(-1)  # [B, H-1]
    ended = jnp.maximum(im_terminal[:, :-1], sim_terminal)
    w = jnp.cumprod(jnp.concatenate([jnp.ones_like(ended[:, :1]), 1.0 - ended[:, :-1]], 1), axis=1)
    w = jnp.where(jnp.isfinite(im_reward) & jnp.isfinite(sim_reward), w, 0.0)
    n = w.sum()
    centred = lambda x: jnp.where(w > 0, x - (jnp.where(w > 0, x, 0.0) * w).sum() / jnp.maximum(n, 1.0), 0.0)
    c = centred(cost)
    var = (w * c ** 2).sum()
    slope = lambda r: (w * c * centred(r)).sum() / jnp.where(var > 0, var, 1.0)
    s_im, s_sim = slope(im_reward), slope(sim_reward)
    ok = (n >= 3) & (var > 0) & (s_sim > 0)
    return jnp.where(ok, s_im / jnp.where(ok, s_sim, 1.0), jnp.nan)


def guide_effect(normalize_obs, value_fn, gamma: float, obs, reward, terminal, base_obs, base_reward, base_terminal):
    """What the state guide changes: the run's guided trajectories against unguided ones
    from the same start states and noise (the same sampler with guide none).

    obs / base_obs [B, H, obs_dim] raw, reward / base_reward [B, H] raw, terminal /
    base_terminal [B, H] (0/1); normalize_obs maps raw states to the world model's units
    (per-dimension mean 0, std 1 over the replay); value_fn raw obs [..., obs_dim] -> [...].
    Returns {'guide_state_shift': RMS over trajectories, rows 1 … H-1 and dimensions of the
    change of the states in normalised units (0.1 is a tenth of a state's spread),
    'guide_advantage_gain': mean over rows 0 … H-2 of the one-step advantage
    A_k = r_k + gamma (1 - d_k) V(s_{k+1}) - V(s_k) (`guidance.one_step_advantage`) under the run's critic, guided minus
    unguided (raw reward units; what `sag` and `eag` aim to raise)}. Both are 0 for guide
    none. Unlike `guide_step_ratio`, the size of each reverse step's push on x0_hat, these
    measure what is left of the pushes in the samples the learner gets. Ours (no reference
    counterpart).
    """
    shift = normalize_obs(obs[:, 1:]) - normalize_obs(base_obs[:, 1:])
    gain = (one_step_advantage(value_fn, obs, reward, terminal, gamma)
            - one_step_advantage(value_fn, base_obs, base_reward, base_terminal, gamma))
    return {"guide_state_shift": jnp.sqrt((shift ** 2).mean()), "guide_advantage_gain": gain.mean()}


# ---------------------------------------------------------------------------- command line
def _config_from_dict(d: dict):
    """A Config from a run's config.json (fields the current Config does not know are left out;
    fields it predates as `config.saved_values` fills them)."""
    from agdjax.config import Config, normalize_sweep, saved_values, validate
    values = saved_values(d)
    values["sweep"] = normalize_sweep(values.get("sweep") or {})
    return validate(Config(**values))


def load_run(run_dir: str):
    """(Config, seeds, restored) of a run directory: its config.json and its newest valid
    checkpoint (`restored.state` has a leading seed axis). Raises FileNotFoundError without
    a config, ValueError without a valid checkpoint."""
    import os
    from agdjax import checkpoint as ckpt_lib
    from agdjax import logging as runlog
    from agdjax.loop import _compiled

    saved, seeds = runlog.read_config(run_dir)
    cfg = _config_from_dict(saved)
    if cfg.sweep:
        raise ValueError(f"{run_dir} is a sweep ({', '.join(k for k, _ in cfg.sweep)}); this command takes "
                         f"runs without a sweep")
    ck = ckpt_lib.Checkpointer(os.path.join(run_dir, "checkpoints"), read_only=True)
    try:
        restored = ck.restore(_compiled(cfg, len(seeds)).abstract)
    finally:
        ck.close()
    if restored is None:
        raise ValueError(f"{run_dir} has no valid checkpoint (run it with checkpoints)")
    return cfg, seeds, restored


def compare_guides(run_dir: str, guides, batch: int = 256, key: int = 0):
    """World-model error of each guide in `guides` on the newest valid checkpoint of
    `run_dir`, from the same start states and noise (same PRNG key for every guide).

    Returns {guide: {metric: [per seed]}} with the metrics of `trajectory_errors`
    (`wm_state_error` per step as a list), `wm_advantage_corr`, `wm_action_cost_ratio`,
    `guide_state_shift` and `guide_advantage_gain`. The run's own guide keeps its scale; the others
    use their defaults for the task. Raises FileNotFoundError / ValueError when the run has
    no config or no valid checkpoint.
    """
    import dataclasses
    import jax
    import numpy as np
    from agdjax import logging as runlog
    from agdjax.train import make_train

    cfg = _config_from_dict(runlog.read_config(run_dir)[0])  # checked before the checkpoint is read
    if cfg.model_free:
        raise ValueError(f"{run_dir} is a model-free run: it has no world model")
    if "reward" in guides and cfg.guide != "reward":
        raise ValueError(f"--guides=reward needs a run trained with --guide=reward (its reward model); "
                         f"this run used --guide={cfg.guide}")
    cfg, seeds, restored = load_run(run_dir)
    keys = jax.random.split(jax.random.PRNGKey(key), len(seeds))
    out = {}
    for g in guides:
        scale = cfg.guide_scale if g == cfg.guide else None
        prog = make_train(dataclasses.replace(cfg, guide=g, guide_scale=scale, wm_error_batch=batch))
        m = jax.jit(jax.vmap(prog.phases["wm_error"]))(restored.state, keys)
        out[g] = {k: np.asarray(v).tolist() for k, v in m.items()}
        out[g]["guide_scale"] = dataclasses.replace(cfg, guide=g, guide_scale=scale).c
    out["_checkpoint"] = {"step": restored.step, "env_steps": restored.driver.get("env_steps"), "seeds": seeds}
    return out


def _table(res) -> str:
    lines = ["| guide | c | state error, step 1 | state error, last step | reward error | advantage corr "
             "| action-cost ratio | guide's state shift | guide's advantage gain |", "|---|---|---|---|---|---|---|---|---|"]
    for g, m in res.items():
        if g.startswith("_"):
            continue
        mean = lambda k: sum(m[k]) / len(m[k])
        lines.append(f"| {g} | {m['guide_scale']:g} | {mean('wm_state_error_1'):.4g} | "
                     f"{mean('wm_state_error_last'):.4g} | {mean('wm_reward_error'):.4g} | "
                     f"{mean('wm_advantage_corr'):.3f} | {mean('wm_action_cost_ratio'):.3f} | "
                     f"{mean('guide_state_shift'):.4g} | {mean('guide_advantage_gain'):.4g} |")
    return "\n".join(lines)


def main(argv=None):
    """python -m agdjax.wm_error RUN_DIR [--guides=none,sag,eag] [--batch=256] [--key=0]"""
    import argparse
    import json
    import os
    import sys
    from agdjax.config import GUIDES
    p = argparse.ArgumentParser(prog="python -m agdjax.wm_error", description=(
        "World-model error against the simulator for each guide, on a run's newest checkpoint "
        "(same start states and noise for every guide). Writes RUN_DIR/wm_error.json."))
    p.add_argument("run_dir")
    p.add_argument("--guides", default="none,sag,eag", help=f"comma-separated, from {','.join(GUIDES)}")
    p.add_argument("--batch", type=int, default=256, help="trajectories per seed (> 0)")
    p.add_argument("--key", type=int, default=0, help="PRNG seed of the start states and noise")
    a = p.parse_args(argv)

    def fail(msg):
        print(f"error: {' '.join(str(msg).split())}", file=sys.stderr)
        sys.exit(2)

    guides = [g for g in a.guides.split(",") if g]
    bad = [g for g in guides if g not in GUIDES]
    if bad or not guides:
        fail(f"--guides={a.guides!r}: allowed are {', '.join(GUIDES)} (comma-separated)")
    if a.batch <= 0:
        fail(f"--batch={a.batch} must be a positive integer")
    if not os.path.isfile(os.path.join(a.run_dir, "config.json")):
        fail(f"{a.run_dir} holds no run (no config.json)")
    try:
        res = compare_guides(a.run_dir, guides, a.batch, a.key)
    except (ValueError, KeyError, TypeError, OSError) as e:
        fail(f"{a.run_dir}: {e}")
    with open(os.path.join(a.run_dir, "wm_error.json"), "w") as f:
        json.dump(res, f, indent=1)
    print(f"checkpoint at env step {res['_checkpoint']['env_steps']}, seeds {res['_checkpoint']['seeds']}, "
          f"{a.batch} trajectories per seed; raw-state MSE (mean over dimensions)")
    print(_table(res))


if __name__ == "__main__":
    main()
