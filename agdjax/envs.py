"""Brax environments (MJX backend by default) with time limits and automatic reset.

Termination (the MDP ended, e.g. Hopper fell) and truncation (the 1000-step time limit)
are kept apart. The transition's true next observation is returned before the reset, so
the replay buffer and GAE see it. The carried state has the same dtypes after `reset`
and after `step` (a Brax trap: otherwise a scan carry breaks or a jitted step recompiles).
"""
from __future__ import annotations

import functools
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp

from agdjax.config import ACTION_BOUND


# What the simulator is given (config.ENV_ACTIONS): by default the policy's sample clipped to
# [-ACTION_BOUND, ACTION_BOUND], the reference's rule (PolyGRAD / AGD-MBRL `polygrad/utils/
# envs.py`: `create_env` wraps every environment in `ClippedActionWrapper`), so the physics and
# the task's control cost see the clipped action; every stepping function takes the bound as
# `action_bound` (None: the raw sample, the "raw" ablation). The replay stores the raw sample
# either way (REPLAY_ACTIONS; `scripts/online_rl.py` stores `act.copy()`, the sample before the
# wrapper clips it), so the world model is trained, and queried in imagination, on the actions
# the policy produces, with the reward the simulator gave.
REPLAY_ACTIONS = "raw"
# The bound of the actions the replay holds, which the world model is trained and queried on
# (`sampler.Guidance.action_bound`): None, since it stores the raw sample.
REPLAY_ACTION_BOUND = None if REPLAY_ACTIONS == "raw" else ACTION_BOUND


class EnvCarry(NamedTuple):
    """Per-environment state carried through the training scan."""
    state: object  # brax.envs.State (pipeline_state, obs, ...)
    t: jax.Array  # int32 [], steps into the current episode
    key: jax.Array  # PRNG key for the next reset


class Transition(NamedTuple):
    """One real transition, raw (un-normalised) units. Shapes for one env."""
    obs: jax.Array  # [obs_dim]
    action: jax.Array  # [act_dim]
    reward: jax.Array  # []
    next_obs: jax.Array  # [obs_dim], true next obs (before any reset)
    terminal: jax.Array  # [] float 0/1: the MDP terminated
    truncated: jax.Array  # [] float 0/1: time limit reached without termination


@functools.lru_cache(maxsize=None)
def make_env(task: str, backend: str):
    """A Brax environment; cached so every compiled function shares the same object."""
    from brax import envs  # imported lazily: brax import is slow
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return envs.get_environment(task, backend=backend)


@functools.lru_cache(maxsize=None)
def _jitted(env):
    """(step, reset, pipeline_init) of `env`, each under `jax.jit`: a program that calls the
    simulator many times (collection, evaluation, the world-model error, every reset) traces
    each of them once per argument shape and reuses the traced function (XLA inlines it).
    Tracing a Brax step costs seconds (about 2 s for positional HalfCheetah on this CPU), so
    this makes tracing a training program several times faster; what it computes is the same."""
    return jax.jit(env.step), jax.jit(env.reset), jax.jit(env.pipeline_init)


@functools.lru_cache(maxsize=None)
def observation_size(env) -> int:
    """`env.observation_size` without running a reset: Brax's property resets the environment
    eagerly on each access (seconds per call on a CPU); this takes the shape of the jitted
    reset once per env."""
    return jax.eval_shape(_jitted(env)[1], jax.random.PRNGKey(0)).obs.shape[-1]


def clip_action(action, action_bound):
    """action clipped to [-action_bound, action_bound]; unchanged when action_bound is None.
    What the simulator is given under `Config.env_action_bound`."""
    return action if action_bound is None else jnp.clip(action, -action_bound, action_bound)


def sim_step(env, state, action, *, action_bound):
    """`env.step(state, clip(action))` of one environment, traced once per shape (see
    `_jitted`): the simulator gets the action clipped to [-action_bound, action_bound], as the
    reference's `ClippedActionWrapper` gives it (the physics and the control cost see the
    clipped action); action_bound None gives it the raw action. action [act_dim], raw.
    Every stepping function takes action_bound as a required keyword (`Config.env_action_bound`;
    ACTION_BOUND for the reference's rule), so no caller can skip the run's rule."""
    return _jitted(env)[0](state, clip_action(action, action_bound))


def _stable(reset_state, step_fn, action_size):
    """Casts `reset_state` leaves to the dtypes/weak types `step` produces."""
    target = jax.eval_shape(step_fn, reset_state, jnp.zeros((action_size,)))
    return jax.tree.map(lambda x, t: jnp.asarray(x, dtype=t.dtype).reshape(t.shape),
                        reset_state, target)


def reset(env, key: jax.Array) -> EnvCarry:
    """Resets one environment. `key`: PRNG key. Returns an EnvCarry with t=0."""
    key, sub = jax.random.split(key)
    state = _stable(_jitted(env)[1](sub), _jitted(env)[0], env.action_size)
    return EnvCarry(state, jnp.zeros((), jnp.int32), key)


def step(env, carry: EnvCarry, action: jax.Array, episode_length: int, *, action_bound):
    """Steps one environment and resets it where the episode ended.

    Args:
      env: a Brax env.  carry: EnvCarry.  action: [act_dim], the policy's raw sample: the
        simulator gets it clipped to [-action_bound, action_bound] (`sim_step`; None: raw),
        the Transition keeps it raw.
      episode_length: time limit (steps).
    Returns:
      (new EnvCarry, Transition).
    """
    nxt = sim_step(env, carry.state, action, action_bound=action_bound)
    t = carry.t + 1
    terminal = nxt.done.astype(jnp.float32)
    truncated = jnp.where(terminal > 0, 0.0, (t >= episode_length).astype(jnp.float32))
    tr = Transition(carry.state.obs, action, nxt.reward, nxt.obs, terminal, truncated)
    fresh = reset(env, carry.key)
    end = (terminal + truncated) > 0
    new_state = jax.tree.map(lambda a, b: jnp.where(end, a, b), fresh.state, nxt)
    new_carry = EnvCarry(new_state, jnp.where(end, 0, t), fresh.key)
    return new_carry, tr


def step_batch(env, carry: EnvCarry, actions: jax.Array, episode_length: int, *, action_bound):
    """`step` over a batch of environments (every leaf with a leading [n_envs] axis), with the
    same results, except that the fresh reset states are computed only when some episode of
    the batch ended: a `lax.cond` on the batch, a real branch where the program runs without a
    seed vmap (one seed; an MJX reset costs about one step), a select that computes both
    under a seed vmap (no saving, no loss).

    Args: carry: EnvCarry [n_envs, ...]; actions [n_envs, act_dim] raw; action_bound as in
    `step`. Returns (EnvCarry, Transition), leaves [n_envs, ...].
    """
    nxt = jax.vmap(functools.partial(sim_step, env, action_bound=action_bound))(carry.state, actions)
    t = carry.t + 1
    terminal = nxt.done.astype(jnp.float32)
    truncated = jnp.where(terminal > 0, 0.0, (t >= episode_length).astype(jnp.float32))
    tr = Transition(carry.state.obs, actions, nxt.reward, nxt.obs, terminal, truncated)
    end = (terminal + truncated) > 0
    keys = jax.vmap(jax.random.split)(carry.key)  # as in `reset`: [0] is kept, [1] resets
    fresh = jax.lax.cond(
        jnp.any(end),
        lambda: jax.vmap(lambda k: _stable(_jitted(env)[1](k), _jitted(env)[0], env.action_size))(keys[:, 1]),
        lambda: nxt)

    def rows(a, b):
        return jnp.where(end.reshape(end.shape + (1,) * (a.ndim - 1)), a, b)

    new_state = jax.tree.map(rows, fresh, nxt)
    return EnvCarry(new_state, jnp.where(end, 0, t), keys[:, 0]), tr


def evaluate(env, policy_fn, key: jax.Array, n_episodes: int, episode_length: int, *, action_bound,
             sampled: bool = False):
    """Mean undiscounted return of `policy_fn` over `n_episodes` parallel episodes.

    `policy_fn(obs[n, obs_dim]) -> action[n, act_dim]` (deterministic, e.g. the mean action), or
    with `sampled=True` `policy_fn(key, obs) -> action` (e.g. train.policy_sample), given to
    the simulator as in `step` (action_bound). The episodes start from the same states for
    both kinds at the same `key` (a paired comparison); the sampling keys come from
    `fold_in(key, 1)`. An episode's return stops accumulating at its first termination.
    Returns float32 [].
    """
    keys = jax.random.split(key, n_episodes)
    carry = jax.vmap(functools.partial(reset, env))(keys)
    act = policy_fn if sampled else (lambda k, obs: policy_fn(obs))

    def body(c, k):
        env_carry, ret, alive = c
        action = act(k, env_carry.state.obs)
        nxt = jax.vmap(functools.partial(sim_step, env, action_bound=action_bound))(env_carry.state, action)
        ret = ret + alive * nxt.reward
        alive = alive * (1.0 - nxt.done)
        return (env_carry._replace(state=nxt), ret, alive), None

    init = (carry, jnp.zeros((n_episodes,)), jnp.ones((n_episodes,)))
    step_keys = jax.random.split(jax.random.fold_in(key, 1), episode_length) if sampled else None
    (_, ret, _), _ = jax.lax.scan(body, init, step_keys, length=episode_length)
    return ret.mean()


def physics_state(state) -> jax.Array:
    """The simulator state of one environment as a flat float32 vector
    [q (n_q), qd (n_qd), x.pos (n_body * 3)]: what `restore` needs to put the simulator back
    exactly where a stored observation was taken. `x.pos` is kept because Brax's rewards use
    the previous step's body positions, which after a physics step lag one substep behind
    `q` (recomputing them from `q` would change the first reward). state: brax State of one
    env. For HalfCheetah (MJX) that is 9 + 9 + 24 = 42 floats.
    """
    ps = state.pipeline_state
    return jnp.concatenate([ps.q, ps.qd, ps.x.pos.reshape(-1)]).astype(jnp.float32)


def restore(env, template, physics: jax.Array, obs: jax.Array):
    """A Brax State of one env put back at a stored simulator state (see `physics_state`).

    template: a (dtype-stable) State of the same env, e.g. one from `reset`; physics [n_phys];
    obs [obs_dim], the observation stored with it. Reward and done are zero. Source: PolyGRAD
    `utils/errors.compute_traj_errors` (reset the simulator to the start state, DESIGN §1
    'World-model fidelity'); Brax `pipeline_init(q, qd)`.
    """
    ps = template.pipeline_state
    n_q, n_qd = ps.q.shape[-1], ps.qd.shape[-1]
    q, qd, x_pos = physics[:n_q], physics[n_q:n_q + n_qd], physics[n_q + n_qd:]
    new = _jitted(env)[2](q.astype(ps.q.dtype), qd.astype(ps.qd.dtype))
    new = new.replace(x=new.x.replace(pos=x_pos.reshape(new.x.pos.shape).astype(new.x.pos.dtype)))
    new = jax.tree.map(lambda a, t: jnp.asarray(a, t.dtype).reshape(t.shape), new, ps)
    return template.replace(pipeline_state=new, obs=obs.astype(template.obs.dtype),
                            reward=jnp.zeros_like(template.reward), done=jnp.zeros_like(template.done))


def rollout(env, template, physics, obs, policy, xs, *, action_bound):
    """Rollouts in the simulator from stored simulator states, one step per leading entry of
    `xs`.

    physics [B, n_phys], obs [B, obs_dim] (raw); policy(x, obs [B, obs_dim]) -> actions
    [B, act_dim] (raw; the simulator gets them as in `step`, action_bound), with x the
    step's entry of `xs` (a PRNG key for the current policy, or the actions [B, act_dim]
    themselves for an open-loop replay). Returns (obs [B, n+1, obs_dim] starting with `obs`,
    actions [B, n, act_dim] as the policy returned them, reward [B, n], terminal [B, n]),
    n = len(xs). Episodes are not reset: a rollout that terminates keeps stepping (callers
    mask after it).
    """
    state = jax.vmap(lambda p, o: restore(env, template, p, o))(physics, obs)

    def body(s, x):
        a = policy(x, s.obs)
        nxt = jax.vmap(functools.partial(sim_step, env, action_bound=action_bound))(s, a)
        return nxt, (nxt.obs, a, nxt.reward, nxt.done.astype(jnp.float32))

    _, (o, a, r, d) = jax.lax.scan(body, state, xs)
    sw = lambda x: jnp.swapaxes(x, 0, 1)
    return jnp.concatenate([obs[:, None], sw(o)], 1), sw(a), sw(r), sw(d)
