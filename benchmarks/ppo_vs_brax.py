"""Model-free PPO: agdjax (`agdjax.model_free`) against `brax.training.agents.ppo.train` on the
same settings; env steps/s of each with compile time apart, and the final eval return.

    python -m benchmarks.ppo_vs_brax [--task=halfcheetah --backend=positional --n_envs=64
        --unroll_length=20 --total_env_steps=51200 --evals=5]

Matched settings: n_envs parallel environments, rollouts of unroll_length steps, one update
per n_envs * unroll_length transitions with ppo_epochs passes of ppo_minibatches minibatches
(brax: num_envs = n_envs, batch_size = n_envs / ppo_minibatches, num_updates_per_batch =
ppo_epochs), the same lr, clip, entropy and value coefficients, gamma, GAE lambda, global-norm
clip, advantage normalisation, no observation normalisation, 2 x hidden MLPs, episode_length,
deterministic evaluation on eval_episodes episodes.
Not matched (each library's own): the policy distribution (agdjax Normal(tanh(MLP), state-free
std) with LayerNorm/ELU; brax tanh-squashed Normal, swish); time limits (agdjax bootstraps
from V(next_obs); brax by default masks truncated transitions out of its GAE and loss, and its
`bootstrap_on_timeout` needs an env that sets info['time_out'], which brax's own
EpisodeWrapper does not); brax's GAE form and evaluation wrapper. One seed each.

Timing. agdjax: compile = lowering + compiling init and run_chunk; env steps/s = env steps /
(wall time of the chunks - evaluations, timed separately). brax: its own `training/walltime`
(evaluations excluded): the steady rate is that of its fastest epoch (epochs that jit-compile
are slower), compile = training walltime - env steps / steady rate; its wall time including
evaluations and their compilation is printed too.

brax 0.14.2 calls `jax.device_put_replicated`, which jax 0.10 removed: a few-line shim is
installed before brax runs (and announced in the output).
"""
from __future__ import annotations

import functools
import json
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from agdjax.config import make_config
from agdjax.model_free import make_model_free_train

flags.DEFINE_string("task", "halfcheetah", "task")
flags.DEFINE_string("backend", "positional", "Brax backend")
flags.DEFINE_integer("n_envs", 64, "parallel environments")
flags.DEFINE_integer("unroll_length", 20, "rollout length per update")
flags.DEFINE_integer("total_env_steps", 51_200, "env steps per run")
flags.DEFINE_integer("evals", 5, "evaluation points including step 0 and the end (>= 3)")
flags.DEFINE_integer("episode_length", 1000, "episode length")
flags.DEFINE_integer("eval_episodes", 10, "episodes per evaluation")
flags.DEFINE_string("out", None, "JSON output path")
FLAGS = flags.FLAGS


def make_cfg():
    E = FLAGS.n_envs * FLAGS.unroll_length
    eval_every = FLAGS.total_env_steps // (FLAGS.evals - 1)
    return make_config(FLAGS.task, "cpu", backend=FLAGS.backend, model_free=True, agent="ppo",
                       n_envs=FLAGS.n_envs, steps_per_iter=FLAGS.unroll_length, unroll_length=FLAGS.unroll_length,
                       total_env_steps=FLAGS.total_env_steps, eval_every=eval_every, iters_per_chunk=eval_every // E,
                       episode_length=FLAGS.episode_length, eval_episodes=FLAGS.eval_episodes,
                       prefill_steps=0)  # model-free ignores the prefill


def run_agdjax(cfg):
    prog = make_model_free_train(cfg)
    keys = jax.random.PRNGKey(0)[None]
    t0 = time.perf_counter()
    init_c = jax.jit(jax.vmap(prog.init)).lower(keys).compile()
    state = jax.block_until_ready(init_c(keys))
    chunk_c = jax.jit(jax.vmap(prog.run_chunk, in_axes=(0, None))).lower(state, jnp.int32(0)).compile()
    compile_s = time.perf_counter() - t0
    ev = jax.jit(jax.vmap(prog.phases["eval"])).lower(state, keys).compile()
    jax.block_until_ready(ev(state, keys))
    t0 = time.perf_counter()
    jax.block_until_ready(ev(state, keys))
    eval_s = time.perf_counter() - t0

    L = cfg.iters_per_chunk
    evals = []
    t0 = time.perf_counter()
    for c in range(math.ceil((cfg.n_iters + 1) / L)):
        state, m = chunk_c(state, jnp.int32(c * L))
        ret = np.asarray(m["eval_return"][0])
        evals += [((c * L + j) * cfg.env_steps_per_iter, float(r)) for j, r in enumerate(ret) if np.isfinite(r)]
    wall = time.perf_counter() - t0
    train_s = wall - len(evals) * eval_s
    return {"compile_s": compile_s, "train_s": train_s, "eval_s_each": eval_s,
            "env_steps_per_s": cfg.total_env_steps / train_s, "evals": evals, "final_eval_return": evals[-1][1]}


def install_device_put_replicated_shim():
    """brax 0.14.2 calls jax.device_put_replicated (removed in jax 0.10): one copy per device."""
    if hasattr(jax, "device_put_replicated"):
        return False

    def device_put_replicated(x, devices):  # a pmap output, sharded as brax's later states are
        return jax.pmap(lambda _: x, devices=devices)(jnp.arange(len(devices)))

    jax.device_put_replicated = device_put_replicated
    return True


def run_brax(cfg):
    from brax import envs
    from brax.training.agents.ppo import networks as ppo_networks
    from brax.training.agents.ppo import train as ppo_train

    env = envs.get_environment(cfg.task, backend=cfg.backend)
    nets = functools.partial(ppo_networks.make_ppo_networks, policy_hidden_layer_sizes=(cfg.hidden,) * 2,
                             value_hidden_layer_sizes=(cfg.hidden,) * 2)
    log = []

    def progress(step, metrics):
        log.append((int(step), time.perf_counter(), dict(metrics)))

    t0 = time.perf_counter()
    ppo_train.train(
        environment=env, num_timesteps=cfg.total_env_steps, num_envs=cfg.n_envs,
        episode_length=cfg.episode_length, learning_rate=cfg.ppo_lr, entropy_cost=cfg.entropy_coef_ppo,
        discounting=cfg.gamma, unroll_length=cfg.rollout_length, batch_size=cfg.n_envs // cfg.ppo_minibatches,
        num_minibatches=cfg.ppo_minibatches, num_updates_per_batch=cfg.ppo_epochs,
        clipping_epsilon=cfg.ppo_clip, gae_lambda=cfg.gae_lambda, max_grad_norm=cfg.ppo_max_grad_norm,
        normalize_advantage=True, vf_loss_coefficient=cfg.ppo_value_coef,
        normalize_observations=False, reward_scaling=1.0, network_factory=nets,
        num_evals=FLAGS.evals, num_eval_envs=cfg.eval_episodes, deterministic_eval=True, seed=0,
        progress_fn=progress)
    total_s = time.perf_counter() - t0
    train_logs = [m for _, _, m in log if "training/walltime" in m]
    steps, walltime = log[-1][0], train_logs[-1]["training/walltime"]
    # an epoch that (re)compiles is slow: the fastest epoch gives the steady rate
    steady_sps = max(float(m["training/sps"]) for m in train_logs)
    compile_s = walltime - steps / steady_sps
    evals = [(s, float(m["eval/episode_reward"])) for s, _, m in log if "eval/episode_reward" in m]
    return {"compile_s": compile_s, "train_s": steps / steady_sps, "total_s": total_s,
            "epoch_sps": [float(m["training/sps"]) for m in train_logs],
            "env_steps_per_s": steady_sps, "evals": evals, "final_eval_return": evals[-1][1]}


def main(_):
    if FLAGS.evals < 3:
        raise app.UsageError("--evals must be >= 3 (brax's steady rate needs two epochs after the first)")
    cfg = make_cfg()
    device = jax.devices()[0].device_kind
    print(f"ppo_vs_brax: task={cfg.task} backend={cfg.backend} n_envs={cfg.n_envs} "
          f"unroll_length={cfg.rollout_length} env_steps={cfg.total_env_steps} epochs={cfg.ppo_epochs} "
          f"minibatches={cfg.ppo_minibatches} hidden={cfg.hidden} device={device}", flush=True)
    ours = run_agdjax(cfg)
    print(f"agdjax done: {ours['env_steps_per_s']:.0f} env steps/s", flush=True)
    if install_device_put_replicated_shim():
        print("note: installed a jax.device_put_replicated shim for brax 0.14.2 (removed in jax 0.10)", flush=True)
    theirs = run_brax(cfg)
    print(f"\n| | env steps/s | compile s | train s | final eval return |")
    print("|---|---|---|---|---|")
    for name, r in (("agdjax model-free PPO", ours), ("brax ppo.train", theirs)):
        print(f"| {name} | {r['env_steps_per_s']:.0f} | {r['compile_s']:.1f} | {r['train_s']:.1f} "
              f"| {r['final_eval_return']:.1f} |")
    print(f"brax: wall time of ppo.train incl. evaluations and their compilation {theirs['total_s']:.1f} s; "
          f"env steps/s per epoch {[round(x) for x in theirs['epoch_sps']]}")
    print("eval curves (env steps, return):")
    print("  agdjax:", [(s, round(r, 1)) for s, r in ours["evals"]])
    print("  brax:  ", [(s, round(r, 1)) for s, r in theirs["evals"]])
    if FLAGS.out:
        with open(FLAGS.out, "w") as f:
            json.dump({"config": cfg.to_dict(), "device": device, "agdjax": ours, "brax": theirs}, f, indent=2)


if __name__ == "__main__":
    app.run(main)
