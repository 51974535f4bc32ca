"""Does the imagined data point the actor where the simulator's data does? (issue 9, point 8)

For each valid checkpoint of a run (one seed), the A2C actor gradient (agents/a2c.py, the
loss the learner follows) is computed on M batches of each kind of imagined data, from the
same replayed start states and the checkpoint's own actor, critic, denoiser and delta:
  - `oracle`: H-step rollouts of the policy in the simulator (the true data);
  - each diffusion guide in GUIDES (the run's own scale for its guide, defaults otherwise);
  - GUIDE>sim for each guide: that guide's imagined actions replayed open-loop in the
    simulator from the same start states (the world model's predicted consequences replaced by
    the true ones; the actions, and so their log-probs, stay the sampler's).
A second, independent set of M oracle batches (other start states and noise) gives the
reference direction g_true. Printed per checkpoint and kind:
  - cos_mean: cosine between the kind's mean gradient over the M batches and g_true. The
    `oracle` row is the ceiling that M batches of true data reach (noise alone keeps it < 1);
  - cos_batch: mean cosine between one batch's gradient (what one update sees) and g_true;
  - proj: <mean gradient, g_true> / |g_true|^2, the part of the true direction it carries;
  - adv: the mean one-step imagined advantage r + gamma V(s') - V(s) (critic of the checkpoint).
Writes OUT (default RUN/gradient_agreement.json) with every number.

usage: python docs/tools/gradient_agreement.py RUN [--batches=64] [--guides=sag,none]
       [--seed_index=0] [--out=FILE]
"""
import argparse
import dataclasses
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_compilation_cache_dir", os.environ.get("AGDJAX_JAX_CACHE",
                                                              os.path.expanduser("~/.cache/agdjax-jax")))
from agdjax import checkpoint as ckpt_lib, envs, replay as rb  # noqa: E402
from agdjax.agents import a2c  # noqa: E402
from agdjax.loop import _compiled  # noqa: E402
from agdjax.train import make_modules, make_train  # noqa: E402
from agdjax.wm_error import _config_from_dict  # noqa: E402
from agdjax import logging as runlog  # noqa: E402


def actor_gradient(cfg, nets, agent, im):
    """The flattened A2C actor gradient [P] of one imagined batch `im` (sampler.Imagined)."""
    adv_n, _, w = a2c.targets(cfg, nets, agent, im.obs, im.reward, im.terminal)
    g = jax.grad(lambda p: a2c.actor_loss(cfg, nets, p, im.obs[:, :-1], im.action[:, :-1], adv_n, w)[0])(
        agent.actor)
    return jnp.concatenate([x.ravel() for x in jax.tree.leaves(g)])


def one_step_advantage(cfg, nets, agent, im):
    v = nets.critic(agent.critic, im.obs)
    alive = 1.0 - im.terminal[:, :-1]
    return (im.reward[:, :-1] + cfg.gamma * alive * v[:, 1:] - v[:, :-1]).mean()


def kind_config(cfg, kind):
    if kind == "oracle":
        return dataclasses.replace(cfg, imagination="oracle", guide="none", guide_scale=None)
    scale = cfg.guide_scale if kind == cfg.guide else None
    return dataclasses.replace(cfg, imagination="diffusion", guide=kind, guide_scale=scale)


def replayed(env, state, im, key, agent_batch):
    """`im` with its states, rewards and terminals replaced by the simulator's under its own
    actions, from the start states that imagine() drew with `key` (train.imagine's split)."""
    s0, physics = rb.sample_starts(state.replay, jax.random.split(key)[0], agent_batch)
    template = jax.tree.map(lambda x: x[0], state.env.state)
    actions = jnp.swapaxes(im.action[:, :-1], 0, 1)  # [H-1, B, A]
    obs, _, reward, term = envs.rollout(env, template, physics, s0, lambda a, o: a, actions)
    pad = lambda x: jnp.concatenate([x, jnp.zeros_like(x[:, :1])], 1)
    return im._replace(obs=obs, reward=pad(reward), terminal=pad(term))


def gradients(cfg, kind, state, keys):
    """[M, P] actor gradients and the mean imagined one-step advantage of `kind` at `keys` [M]."""
    guide, sim = kind.removesuffix(">sim"), kind.endswith(">sim")
    c = kind_config(cfg, guide)
    prog = make_train(c)
    mods = make_modules(c, prog.act_dim)
    nets = a2c.Nets(mods.actor.apply, mods.critic.apply)
    env = envs.make_env(c.task, c.backend)

    def one(key):
        im = prog.phases["imagine"](state, key)
        if sim:
            im = replayed(env, state, im, key, c.agent_batch)
        return actor_gradient(c, nets, state.agent, im), one_step_advantage(c, nets, state.agent, im)

    g, adv = jax.jit(jax.vmap(one))(keys)
    return np.asarray(g, np.float64), float(np.mean(adv))


def cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def agreement(g, g_true):
    """cos_mean, cos_batch, proj of gradients g [M, P] against the reference direction g_true [P]."""
    mean = g.mean(0)
    return dict(cos_mean=cos(mean, g_true), cos_batch=float(np.mean([cos(x, g_true) for x in g])),
                proj=float(mean @ g_true / (g_true @ g_true)))


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run")
    p.add_argument("--batches", type=int, default=64)
    p.add_argument("--guides", default="sag,none")
    p.add_argument("--seed_index", type=int, default=0)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    saved, seeds = runlog.read_config(a.run)
    cfg = _config_from_dict(saved)
    if cfg.model_free or cfg.agent != "a2c" or cfg.sweep:
        sys.exit(f"{a.run}: needs an a2c run in imagination without a sweep")
    guides = [g for g in a.guides.split(",") if g]
    kinds = ["oracle"] + guides + [g + ">sim" for g in guides]
    ck = ckpt_lib.Checkpointer(os.path.join(a.run, "checkpoints"), read_only=True)
    abstract = _compiled(cfg, len(seeds)).abstract
    out = {"run": a.run, "seed": seeds[a.seed_index], "batches": a.batches, "agent_batch": cfg.agent_batch,
           "steps": {}}
    keys = jax.random.split(jax.random.PRNGKey(0), 2 * a.batches)
    for step in ck.valid_steps():
        r = ck.restore_step(step, abstract)
        env_steps = str(r.driver.get("env_steps", step))
        if env_steps in out["steps"]:
            continue  # the same env step saved under two checkpoint steps
        state = jax.tree.map(lambda x: x[a.seed_index], r.state)
        g_true = gradients(cfg, "oracle", state, keys[a.batches:])[0].mean(0)
        rows = {}
        for kind in kinds:
            g, adv = gradients(cfg, kind, state, keys[:a.batches])
            rows[kind] = dict(agreement(g, g_true), adv=adv)
        out["steps"][env_steps] = rows
        print(f"env steps {env_steps} (seed {seeds[a.seed_index]}, {a.batches} batches of {cfg.agent_batch})")
        print(f"  {'kind':9s} {'cos_mean':>9s} {'cos_batch':>10s} {'proj':>7s} {'adv':>8s}")
        for kind, m in rows.items():
            print(f"  {kind:9s} {m['cos_mean']:9.3f} {m['cos_batch']:10.3f} {m['proj']:7.3f} {m['adv']:8.3f}",
                  flush=True)
    ck.close()
    path = a.out or os.path.join(a.run, "gradient_agreement.json")
    with open(path + ".tmp", "w") as f:
        json.dump(out, f, indent=1)
    os.replace(path + ".tmp", path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
