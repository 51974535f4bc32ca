"""Model-free PPO: agdjax (`agdjax.model_free`) against `brax.training.agents.ppo.train` on the
same settings, in one process, one after the other; env steps/s of each with compile time
apart, eval returns at equal env steps over seeds, and a profile of where the time goes.

    python -m benchmarks.ppo_vs_brax [--task=halfcheetah --backend=spring --n_envs=64
        --unroll_length=20 --total_env_steps=51200 --evals=5 --seeds=2 --profile --out=F.json]
    python -m benchmarks.ppo_vs_brax --seeds=0          # the profile only

Matched settings: n_envs parallel environments, rollouts of unroll_length steps, one update
per n_envs * unroll_length transitions with ppo_epochs passes of ppo_minibatches minibatches
(brax: num_envs = n_envs, batch_size = n_envs / ppo_minibatches, num_updates_per_batch =
ppo_epochs), so both take ppo_epochs * ppo_minibatches SGD steps of n_envs * unroll_length /
ppo_minibatches transitions per update; the same lr, clip, entropy and value coefficients,
gamma, GAE lambda, global-norm clip, advantage normalisation, no observation normalisation,
2 x hidden MLPs for actor and critic, episode_length, deterministic evaluation on
eval_episodes episodes at the same env steps, evaluation time excluded from both rates.
Not matched (each library's own): the policy distribution and networks (agdjax Normal(tanh(MLP),
state-free std) with LayerNorm/ELU; brax tanh-squashed Normal with a state-dependent std,
swish, no LayerNorm); minibatches (agdjax: shuffled transitions, GAE once per update; brax:
shuffled whole trajectories, GAE recomputed inside every minibatch loss with the current
critic); time limits (agdjax bootstraps from V(next_obs); brax by default masks truncated
transitions out of its GAE and loss); resets (agdjax draws a fresh random initial state at
every episode end, and computes that candidate reset every step; brax's AutoResetWrapper
reuses the state of the first reset); brax's evaluation wrapper.

Two ways to run ours: "agdjax, one seed" is the per-seed program jit-compiled as it is (as
brax runs its one seed); "agdjax, seed axis (CLI)" is jit(vmap(...)) over a seed axis of size
1, as `agdjax.loop` (the `--model_free` entry point) runs it. XLA:CPU runs the size-1 seed axis
slower (mostly the backward pass of the SGD steps and the physics), so both are reported.

Timing, the same statistic for all: env steps / wall time over the steady (non-compiling)
parts of the run, evaluations excluded. agdjax: init and run_chunk are compiled ahead (compile
= lowering + compiling them, once; later seeds reuse them); every chunk is timed and the
evaluations it ran (their time measured apart, same compiled code) are subtracted. brax: each
epoch's own `training/sps` (its training_epoch timed without evaluations); an epoch during
which XLA compiled something (brax re-compiles its epoch function on the second epoch here)
is not steady; compile = time of those epochs - their env steps / steady rate. Earlier
versions compared brax's fastest epoch with our mean over the run, which favoured brax.
Runs alternate (seed 0: ours, ours with the seed axis, brax; then seed 1 ...) so that a change
in the machine's load hits all three.

Profile (--profile): each piece jit-compiled alone and timed `--profile_reps` times,
interleaved between the libraries (median ms per call): the environment alone (a scan of the
vmapped, wrapped env step with a fixed action), one rollout with policy sampling, our GAE +
behaviour-policy pass, one update (GAE + SGD epochs), and one whole training step. brax's
pieces are rebuilt from its own functions as `ppo.train` composes them (`brax_pieces`).

brax 0.14.2 calls `jax.device_put_replicated`, which jax 0.10 removed: a few-line shim is
installed before brax runs (and announced in the output).
"""
from __future__ import annotations

import functools
import json
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from agdjax import envs as agd_envs
from agdjax.config import make_config
from agdjax.model_free import make_model_free_train

flags.DEFINE_string("task", "halfcheetah", "task")
flags.DEFINE_string("backend", "spring", "Brax backend")
flags.DEFINE_integer("n_envs", 64, "parallel environments")
flags.DEFINE_integer("unroll_length", 20, "rollout length per update")
flags.DEFINE_integer("total_env_steps", 51_200, "env steps per run")
flags.DEFINE_integer("evals", 5, "evaluation points including step 0 and the end (>= 3)")
flags.DEFINE_integer("episode_length", 1000, "episode length")
flags.DEFINE_integer("eval_episodes", 10, "episodes per evaluation")
flags.DEFINE_integer("seeds", 2, "seeds per library (0 = profile only); runs alternate agdjax, brax")
flags.DEFINE_bool("profile", True, "time rollout, update and training step of both libraries")
flags.DEFINE_integer("profile_reps", 10, "timed calls per profiled piece")
flags.DEFINE_string("out", None, "JSON output path")
FLAGS = flags.FLAGS

# Every XLA compilation, (end time, seconds, function): tells brax's compiling epochs apart.
_COMPILES = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, secs, **kw: _COMPILES.append((time.perf_counter(), secs, kw.get("fun_name", "")))
    if event == "/jax/core/compile/backend_compile_duration" else None)


def make_cfg():
    E = FLAGS.n_envs * FLAGS.unroll_length
    eval_every = FLAGS.total_env_steps // (FLAGS.evals - 1)
    return make_config(FLAGS.task, "cpu", backend=FLAGS.backend, model_free=True, agent="ppo",
                       n_envs=FLAGS.n_envs, steps_per_iter=FLAGS.unroll_length, unroll_length=FLAGS.unroll_length,
                       total_env_steps=FLAGS.total_env_steps, eval_every=eval_every, iters_per_chunk=eval_every // E,
                       episode_length=FLAGS.episode_length, eval_episodes=FLAGS.eval_episodes,
                       prefill_steps=0)  # model-free ignores the prefill


# ----------------------------------------------------------------------------- agdjax
def _seed_axis(fn, vmapped: bool, in_axes=0):
    return jax.vmap(fn, in_axes=in_axes) if vmapped else fn


class Agdjax:
    """Our program, compiled once and run per seed. vmapped=True runs it as the CLI does
    (`agdjax.loop`: jit(vmap(run_chunk)) over a seed axis, here of size 1); vmapped=False
    runs the per-seed program itself, as brax runs its one seed."""

    def __init__(self, cfg, vmapped: bool):
        self.cfg, self.prog, self.vmapped = cfg, make_model_free_train(cfg), vmapped
        keys = self.keys(0)
        t0 = time.perf_counter()
        self.init_c = jax.jit(_seed_axis(self.prog.init, vmapped)).lower(keys).compile()
        state = self.init_c(keys)
        run_chunk = _seed_axis(self.prog.run_chunk, vmapped, in_axes=(0, None))
        self.chunk_c = jax.jit(run_chunk).lower(state, jnp.int32(0)).compile()
        self.compile_s = time.perf_counter() - t0
        self.eval_c = jax.jit(_seed_axis(self.prog.phases["eval"], vmapped)).lower(state, keys).compile()

    def keys(self, seed):
        key = jax.random.PRNGKey(seed)
        return key[None] if self.vmapped else key

    def run(self, seed):
        cfg, L, E = self.cfg, self.cfg.iters_per_chunk, self.cfg.env_steps_per_iter
        keys = self.keys(seed)
        state = jax.block_until_ready(self.init_c(keys))
        eval_ts = []
        for _ in range(2):  # the evaluation alone, to subtract from the chunks that ran one
            t0 = time.perf_counter()
            jax.block_until_ready(self.eval_c(state, keys))
            eval_ts.append(time.perf_counter() - t0)
        eval_s = float(np.mean(eval_ts))
        evals, chunks = [], []
        for c in range(math.ceil((cfg.n_iters + 1) / L)):
            t0 = time.perf_counter()
            state, m = self.chunk_c(state, jnp.int32(c * L))
            ret = np.asarray(m["eval_return"]).reshape(-1)  # waits for the chunk
            wall = time.perf_counter() - t0
            found = [((c * L + j) * E, float(r)) for j, r in enumerate(ret) if np.isfinite(r)]
            evals += found
            steps = max(0, min(L, cfg.n_iters - c * L)) * E
            chunks.append({"env_steps": steps, "wall_s": wall, "evals": len(found),
                           "train_s": wall - len(found) * eval_s})
        train_s = sum(ch["train_s"] for ch in chunks)
        return {"seed": seed, "compile_s": self.compile_s, "train_s": train_s, "eval_s_each": eval_s,
                "env_steps_per_s": cfg.total_env_steps / train_s,
                "chunk_sps": [ch["env_steps"] / ch["train_s"] for ch in chunks if ch["env_steps"]],
                "chunks": chunks, "evals": evals, "final_eval_return": evals[-1][1]}


# ----------------------------------------------------------------------------- brax
def install_device_put_replicated_shim():
    """brax 0.14.2 calls jax.device_put_replicated (removed in jax 0.10): one copy per device."""
    if hasattr(jax, "device_put_replicated"):
        return False

    def device_put_replicated(x, devices):  # a pmap output, sharded as brax's later states are
        return jax.pmap(lambda _: x, devices=devices)(jnp.arange(len(devices)))

    jax.device_put_replicated = device_put_replicated
    return True


def brax_networks(cfg):
    from brax.training.agents.ppo import networks as ppo_networks
    return functools.partial(ppo_networks.make_ppo_networks, policy_hidden_layer_sizes=(cfg.hidden,) * 2,
                             value_hidden_layer_sizes=(cfg.hidden,) * 2)


def run_brax(cfg, seed):
    from brax import envs
    from brax.training.agents.ppo import train as ppo_train

    env = envs.get_environment(cfg.task, backend=cfg.backend)
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
        normalize_observations=False, reward_scaling=1.0, network_factory=brax_networks(cfg),
        num_evals=FLAGS.evals, num_eval_envs=cfg.eval_episodes, deterministic_eval=True, seed=seed,
        progress_fn=progress)
    total_s = time.perf_counter() - t0
    epochs, prev_step = [], 0
    for step, t_end, m in log:
        if "training/sps" not in m:
            continue
        sps = float(m["training/sps"])
        steps = step - prev_step
        prev_step = step
        dur = steps / sps
        end = t_end - float(m["eval/epoch_eval_time"])  # the epoch ended before its evaluation
        compiled = [s for t, s, _ in _COMPILES if end - dur - 0.05 <= t <= end + 0.05 and s > 0.1]
        epochs.append({"env_steps": steps, "sps": sps, "wall_s": dur, "compile_events_s": sum(compiled),
                       "steady": not compiled})
    steady = [e for e in epochs if e["steady"]]
    if not steady:
        raise RuntimeError("every brax epoch compiled: raise --evals for steady epochs")
    steady_sps = sum(e["env_steps"] for e in steady) / sum(e["wall_s"] for e in steady)
    compile_s = sum(e["wall_s"] - e["env_steps"] / steady_sps for e in epochs if not e["steady"])
    evals = [(s, float(m["eval/episode_reward"])) for s, _, m in log if "eval/episode_reward" in m]
    return {"seed": seed, "compile_s": compile_s, "train_s": cfg.total_env_steps / steady_sps, "total_s": total_s,
            "epoch_sps": [e["sps"] for e in epochs], "epochs": epochs, "env_steps_per_s": steady_sps,
            "evals": evals, "final_eval_return": evals[-1][1]}


# ----------------------------------------------------------------------------- profile
def brax_pieces(cfg):
    """brax's rollout, update and training step rebuilt from its own parts as in ppo.train
    (wrap, generate_unroll, compute_ppo_loss, loss_and_pgrad, the same minibatch/epoch scans):
    name -> (function, args)."""
    import optax
    from brax import envs
    from brax.training import acting, gradients
    from brax.training.acme import running_statistics, specs
    from brax.training.agents.ppo import losses as ppo_losses
    from brax.training.agents.ppo import networks as ppo_networks

    N, T, M = cfg.n_envs, cfg.rollout_length, cfg.ppo_minibatches
    env = envs.training.wrap(envs.get_environment(cfg.task, backend=cfg.backend),
                             episode_length=cfg.episode_length, action_repeat=1)
    k_env, k_pol, k_val, key = jax.random.split(jax.random.PRNGKey(0), 4)
    env_state = jax.jit(env.reset)(jax.random.split(k_env, N))
    net = brax_networks(cfg)(env.observation_size, env.action_size, preprocess_observations_fn=lambda x, y: x)
    params = ppo_losses.PPONetworkParams(net.policy_network.init(k_pol), net.value_network.init(k_val))
    norm = running_statistics.init_state(specs.Array((env.observation_size,), jnp.dtype("float32")))
    make_policy = ppo_networks.make_inference_fn(net)
    tx = optax.chain(optax.clip_by_global_norm(cfg.ppo_max_grad_norm), optax.adam(cfg.ppo_lr))
    opt = tx.init(params)
    loss_fn = functools.partial(
        ppo_losses.compute_ppo_loss, ppo_network=net, entropy_cost=cfg.entropy_coef_ppo, discounting=cfg.gamma,
        reward_scaling=1.0, gae_lambda=cfg.gae_lambda, clipping_epsilon=cfg.ppo_clip, normalize_advantage=True,
        vf_coefficient=cfg.ppo_value_coef)
    grad_fn = gradients.loss_and_pgrad(loss_fn, pmap_axis_name=None, has_aux=True)

    def env_only(s, a):
        return jax.lax.scan(lambda s, _: (env.step(s, a), None), s, None, length=T)[0].obs

    def rollout(params, s, k):
        policy = make_policy((norm, params.policy, params.value))
        s, data = acting.generate_unroll(env, s, policy, k, T,
                                         extra_fields=("truncation", "episode_metrics", "episode_done"))
        return s, jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), data)  # [N, T, ...] as in training_step

    def update(params, opt, data, k):
        def minibatch(c, mb):
            opt, params, k = c
            k, k_loss = jax.random.split(k)
            (_, m), g = grad_fn(params, norm, mb, k_loss)
            u, opt = tx.update(g, opt)
            return (opt, optax.apply_updates(params, u), k), m

        def epoch(c, _):
            opt, params, k = c
            k, k_perm, k_grad = jax.random.split(k, 3)
            mbs = jax.tree.map(lambda x: jax.random.permutation(k_perm, x).reshape((M, -1) + x.shape[1:]), data)
            (opt, params, _), m = jax.lax.scan(minibatch, (opt, params, k_grad), mbs)
            return (opt, params, k), m

        return jax.lax.scan(epoch, (opt, params, k), None, length=cfg.ppo_epochs)[0][:2]

    def train_step(params, opt, s, k):
        k_unroll, k_sgd = jax.random.split(k)
        s, data = rollout(params, s, k_unroll)
        return update(params, opt, data, k_sgd), s

    _, data = jax.jit(rollout)(params, env_state, key)
    action = jnp.zeros((N, env.action_size)) + 0.1
    return {"env_only": (env_only, (env_state, action)), "rollout": (rollout, (params, env_state, key)),
            "update": (update, (params, opt, data, key)), "train_step": (train_step, (params, opt, env_state, key))}


def agdjax_pieces(cfg, vmapped: bool):
    """Our phases, with or without the seed axis of size 1: name -> (function, args)."""
    prog = make_model_free_train(cfg)
    ph = {k: _seed_axis(f, vmapped) for k, f in prog.phases.items()}
    env = agd_envs.make_env(cfg.task, cfg.backend)
    key = jax.random.PRNGKey(0)
    keys = key[None] if vmapped else key
    state = jax.jit(_seed_axis(prog.init, vmapped))(keys)
    _, ro = jax.jit(ph["collect"])(state, keys)
    step = jax.vmap(functools.partial(agd_envs.step, env, episode_length=cfg.episode_length,
                                      action_bound=cfg.env_action_bound))
    action = jnp.zeros((1, cfg.n_envs, env.action_size) if vmapped else (cfg.n_envs, env.action_size)) + 0.1

    def env_only(carry, a):
        return jax.lax.scan(lambda c, _: (step(c, a)[0], None), carry, None, length=cfg.rollout_length)[0].state.obs

    pieces = {"env_only": (_seed_axis(env_only, vmapped), (state.env, action)),
              "rollout": (ph["collect"], (state, keys)),
              "batch": (ph["batch"], (state, ro)),
              "update": (ph["update"], (state, ro))}
    if cfg.steps_per_iter == cfg.rollout_length:  # one rollout and one update per iteration
        before = jnp.zeros((1,) if vmapped else (), jnp.int32)  # env steps done (unused by the schedule)
        pieces["train_step"] = (ph["train"], (state, before))
    return pieces


LIBS = {"agdjax_vmap": "agdjax, seed axis (CLI)", "agdjax": "agdjax, one seed", "brax": "brax"}


def profile(cfg, reps: int):
    """Median ms per call of each piece, the libraries interleaved call by call."""
    pieces = {("agdjax_vmap", k): v for k, v in agdjax_pieces(cfg, True).items()}
    pieces.update({("agdjax", k): v for k, v in agdjax_pieces(cfg, False).items()})
    pieces.update({("brax", k): v for k, v in brax_pieces(cfg).items()})
    compiled, compile_s, times = {}, {}, {k: [] for k in pieces}
    for k, (fn, args) in pieces.items():
        t0 = time.perf_counter()
        compiled[k] = jax.jit(fn).lower(*args).compile()
        jax.block_until_ready(compiled[k](*args))  # warm-up
        compile_s[k] = time.perf_counter() - t0
    for _ in range(reps):
        for k, (_, args) in pieces.items():
            t0 = time.perf_counter()
            jax.block_until_ready(compiled[k](*args))
            times[k].append(time.perf_counter() - t0)
    out = {"env_steps_per_call": cfg.n_envs * cfg.rollout_length, "reps": reps, "pieces": {}}
    for (lib, name), ts in times.items():
        out["pieces"].setdefault(name, {})[lib] = {
            "ms": 1e3 * float(np.median(ts)), "ms_min": 1e3 * min(ts), "compile_s": compile_s[(lib, name)]}
    return out


PIECES = {"env_only": "environment alone (T wrapped env steps, fixed action)",
          "rollout": "rollout (T env steps + policy sampling)",
          "batch": "GAE + behaviour policy on the batch",
          "update": "update (GAE + epochs x minibatches SGD)",
          "train_step": "training step (rollout + update)"}


def print_profile(prof):
    print(f"\nprofile: median ms per call of {prof['env_steps_per_call']} env steps "
          f"({prof['reps']} calls each, interleaved)")
    print("| piece | " + " | ".join(f"{v} ms" for v in LIBS.values()) + " | one seed / brax |")
    print("|---|" + "---|" * (len(LIBS) + 1))
    f = lambda x: "—" if x is None else f"{x:.1f}"
    for name, what in PIECES.items():
        p = {lib: prof["pieces"].get(name, {}).get(lib, {}).get("ms") for lib in LIBS}
        r = "—" if p["agdjax"] is None or p["brax"] is None else f"{p['agdjax'] / p['brax']:.2f}"
        print(f"| {what} | " + " | ".join(f(p[lib]) for lib in LIBS) + f" | {r} |")


def summarize(runs):
    sps = [r["env_steps_per_s"] for r in runs]
    final = [r["final_eval_return"] for r in runs]
    curve = {}
    for r in runs:
        for s, ret in r["evals"]:
            curve.setdefault(s, []).append(ret)
    return {"env_steps_per_s_mean": float(np.mean(sps)), "env_steps_per_s_std": float(np.std(sps)),
            "final_eval_return_mean": float(np.mean(final)), "final_eval_return_std": float(np.std(final)),
            "compile_s_first": runs[0]["compile_s"],
            "eval_curve": {str(s): [float(np.mean(v)), float(np.std(v))] for s, v in sorted(curve.items())}}


def main(_):
    if FLAGS.evals < 3:
        raise app.UsageError("--evals must be >= 3 (brax needs steady epochs after the compiling ones)")
    cfg = make_cfg()
    device = jax.devices()[0].device_kind
    load = os.getloadavg()
    print(f"ppo_vs_brax: task={cfg.task} backend={cfg.backend} n_envs={cfg.n_envs} "
          f"unroll_length={cfg.rollout_length} env_steps={cfg.total_env_steps} epochs={cfg.ppo_epochs} "
          f"minibatches={cfg.ppo_minibatches} hidden={cfg.hidden} seeds={FLAGS.seeds} device={device} "
          f"cpus={os.cpu_count()} load_avg_1min={load[0]:.2f}", flush=True)
    if install_device_put_replicated_shim():
        print("note: installed a jax.device_put_replicated shim for brax 0.14.2 (removed in jax 0.10)", flush=True)
    print("timing: env steps / wall time over steady (non-compiling) parts, evaluations excluded, "
          "the same statistic for all (not brax's fastest epoch)", flush=True)
    res = {"config": cfg.to_dict(), "device": device, "cpus": os.cpu_count(),
           "date": time.strftime("%Y-%m-%d"), "load_avg_start": load, "runs": {k: [] for k in LIBS}}
    ours = {}
    if FLAGS.seeds:
        for lib, vmapped in (("agdjax", False), ("agdjax_vmap", True)):
            ours[lib] = Agdjax(cfg, vmapped)
            print(f"{LIBS[lib]}: compiled in {ours[lib].compile_s:.1f} s", flush=True)
    for seed in range(FLAGS.seeds):  # alternate, so that a change in machine load hits all
        for lib in LIBS:
            r = ours[lib].run(seed) if lib in ours else run_brax(cfg, seed)
            res["runs"][lib].append(r)
            parts = (f"chunks {[round(x) for x in r['chunk_sps']]}" if lib in ours else
                     f"epochs {[round(x) for x in r['epoch_sps']]} (steady {[e['steady'] for e in r['epochs']]})")
            print(f"{LIBS[lib]}, seed {seed}: {r['env_steps_per_s']:.0f} env steps/s, {parts}, "
                  f"final eval {r['final_eval_return']:.1f}", flush=True)
    if FLAGS.seeds:
        summ = res["summary"] = {k: summarize(v) for k, v in res["runs"].items()}
        b = summ["brax"]["env_steps_per_s_mean"]
        print(f"\n| | env steps/s (mean ± std, {FLAGS.seeds} seeds) | ratio to brax | compile s "
              f"| final eval return (mean ± std) |")
        print("|---|---|---|---|---|")
        for lib, name in LIBS.items():
            s = summ[lib]
            s["ratio_to_brax"] = s["env_steps_per_s_mean"] / b
            print(f"| {name} | {s['env_steps_per_s_mean']:.0f} ± {s['env_steps_per_s_std']:.0f} "
                  f"| {s['ratio_to_brax']:.2f} | {s['compile_s_first']:.1f} "
                  f"| {s['final_eval_return_mean']:.1f} ± {s['final_eval_return_std']:.1f} |")
        print("eval return at equal env steps, mean ± std over seeds:")
        for lib, name in LIBS.items():
            print(f"  {name}:", {int(k): f"{m:.1f} ± {sd:.1f}" for k, (m, sd) in summ[lib]["eval_curve"].items()})
        print(f"brax wall time of ppo.train incl. evaluations and compilation: "
              f"{[round(r['total_s'], 1) for r in res['runs']['brax']]} s")
    if FLAGS.profile:
        res["profile"] = profile(cfg, FLAGS.profile_reps)
        print_profile(res["profile"])
    res["load_avg_end"] = os.getloadavg()
    print(f"load average (1, 5, 15 min) at start {tuple(round(x, 2) for x in load)}, "
          f"at end {tuple(round(x, 2) for x in res['load_avg_end'])} on {os.cpu_count()} CPUs")
    if FLAGS.out:
        with open(FLAGS.out, "w") as f:
            json.dump(res, f, indent=2, default=float)


if __name__ == "__main__":
    app.run(main)
