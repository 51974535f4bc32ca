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


def _stable(reset_state, step_fn, action_size):
    """Casts `reset_state` leaves to the dtypes/weak types `step` produces."""
    target = jax.eval_shape(step_fn, reset_state, jnp.zeros((action_size,)))
    return jax.tree.map(lambda x, t: jnp.asarray(x, dtype=t.dtype).reshape(t.shape),
                        reset_state, target)


def reset(env, key: jax.Array) -> EnvCarry:
    """Resets one environment. `key`: PRNG key. Returns an EnvCarry with t=0."""
    key, sub = jax.random.split(key)
    state = _stable(env.reset(sub), env.step, env.action_size)
    return EnvCarry(state, jnp.zeros((), jnp.int32), key)


def step(env, carry: EnvCarry, action: jax.Array, episode_length: int):
    """Steps one environment and resets it where the episode ended.

    Args:
      env: a Brax env.  carry: EnvCarry.  action: [act_dim], clipped to [-1, 1] here.
      episode_length: time limit (steps).
    Returns:
      (new EnvCarry, Transition).
    """
    action = jnp.clip(action, -1.0, 1.0)
    nxt = env.step(carry.state, action)
    t = carry.t + 1
    terminal = nxt.done.astype(jnp.float32)
    truncated = jnp.where(terminal > 0, 0.0, (t >= episode_length).astype(jnp.float32))
    tr = Transition(carry.state.obs, action, nxt.reward, nxt.obs, terminal, truncated)
    fresh = reset(env, carry.key)
    end = (terminal + truncated) > 0
    new_state = jax.tree.map(lambda a, b: jnp.where(end, a, b), fresh.state, nxt)
    new_carry = EnvCarry(new_state, jnp.where(end, 0, t), fresh.key)
    return new_carry, tr


def step_batch(env, carry: EnvCarry, actions: jax.Array, episode_length: int):
    """`step` over a batch of environments (every leaf with a leading [n_envs] axis), with the
    same results, except that the fresh reset states are computed only when some episode of
    the batch ended: a `lax.cond` on the batch, a real branch where the program runs without a
    seed vmap (one seed; an MJX reset costs about one step), a select that computes both
    under a seed vmap (no saving, no loss).

    Args: carry: EnvCarry [n_envs, ...]; actions [n_envs, act_dim]. Returns (EnvCarry,
    Transition), leaves [n_envs, ...].
    """
    actions = jnp.clip(actions, -1.0, 1.0)
    nxt = jax.vmap(env.step)(carry.state, actions)
    t = carry.t + 1
    terminal = nxt.done.astype(jnp.float32)
    truncated = jnp.where(terminal > 0, 0.0, (t >= episode_length).astype(jnp.float32))
    tr = Transition(carry.state.obs, actions, nxt.reward, nxt.obs, terminal, truncated)
    end = (terminal + truncated) > 0
    keys = jax.vmap(jax.random.split)(carry.key)  # as in `reset`: [0] is kept, [1] resets
    fresh = jax.lax.cond(
        jnp.any(end),
        lambda: jax.vmap(lambda k: _stable(env.reset(k), env.step, env.action_size))(keys[:, 1]),
        lambda: nxt)

    def rows(a, b):
        return jnp.where(end.reshape(end.shape + (1,) * (a.ndim - 1)), a, b)

    new_state = jax.tree.map(rows, fresh, nxt)
    return EnvCarry(new_state, jnp.where(end, 0, t), keys[:, 0]), tr


def evaluate(env, policy_fn, key: jax.Array, n_episodes: int, episode_length: int):
    """Mean undiscounted return of `policy_fn` over `n_episodes` parallel episodes.

    `policy_fn(obs[n, obs_dim]) -> action[n, act_dim]` (deterministic, e.g. mean action).
    An episode's return stops accumulating at its first termination. Returns float32 [].
    """
    keys = jax.random.split(key, n_episodes)
    carry = jax.vmap(functools.partial(reset, env))(keys)

    def body(c, _):
        env_carry, ret, alive = c
        action = policy_fn(env_carry.state.obs)
        nxt = jax.vmap(env.step)(env_carry.state, jnp.clip(action, -1.0, 1.0))
        ret = ret + alive * nxt.reward
        alive = alive * (1.0 - nxt.done)
        return (env_carry._replace(state=nxt), ret, alive), None

    init = (carry, jnp.zeros((n_episodes,)), jnp.ones((n_episodes,)))
    (_, ret, _), _ = jax.lax.scan(body, init, None, length=episode_length)
    return ret.mean()
