"""Replay buffer of real transitions, kept per environment in time order.

Windows of `H` consecutive transitions are sampled for the diffusion model. A window never
joins two episodes: after a terminal transition the window is padded (state repeats the
terminal next state, reward 0, terminal 1, action 0), as in the PolyGRAD reference; a window
that would cross a time-limit truncation is moved so it ends at (or starts after) it.
Assumes episodes (up to truncation) are at least `H` steps long, as with 1000-step limits.
"""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
from flax import struct

from agdjax.envs import Transition


@struct.dataclass
class Replay:
    data: Transition  # each leaf [n_envs, capacity, ...]
    physics: jax.Array  # [n_envs, capacity, n_phys]: simulator state before each transition (envs.physics_state)
    ptr: jax.Array  # int32 [], next physical write index (same for every env)
    size: jax.Array  # int32 [], valid transitions per env


class Window(struct.PyTreeNode):
    """A batch of windows in raw units: obs [B, H, obs_dim], action [B, H, act_dim],
    reward [B, H], terminal [B, H] (0/1)."""
    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    terminal: jax.Array


def init(n_envs: int, capacity: int, obs_dim: int, act_dim: int, phys_dim: int = 0) -> Replay:
    """An empty buffer; `phys_dim` floats of simulator state are kept per transition (0: none)."""
    z = lambda *s: jnp.zeros((n_envs, capacity) + s, jnp.float32)
    data = Transition(z(obs_dim), z(act_dim), z(), z(obs_dim), z(), z())
    return Replay(data, z(phys_dim), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def add(replay: Replay, tr: Transition, physics=None) -> Replay:
    """Appends one time step for every env; `tr` leaves are [n_envs, ...]; `physics`
    [n_envs, n_phys] the simulator state the transition started from (None if phys_dim is 0)."""
    capacity = replay.data.obs.shape[1]
    data = jax.tree.map(lambda buf, x: buf.at[:, replay.ptr].set(x), replay.data, tr)
    phys = replay.physics if physics is None else replay.physics.at[:, replay.ptr].set(physics)
    return Replay(data, phys, (replay.ptr + 1) % capacity, jnp.minimum(replay.size + 1, capacity))


def _physical(replay: Replay, logical):
    capacity = replay.data.obs.shape[1]
    return (replay.ptr - replay.size + logical) % capacity


def _gather(replay: Replay, env, logical):
    return jax.tree.map(lambda buf: buf[env, _physical(replay, logical)], replay.data)


def _window_start(replay: Replay, env, start, horizon):
    """Moves `start` so the window does not cross a time-limit truncation."""
    trunc = _gather(replay, env, start + jnp.arange(horizon - 1)).truncated > 0
    p = jnp.argmax(trunc)
    before = start + p - (horizon - 1)  # window ends at the truncation
    moved = jnp.where(before >= 0, before, start + p + 1)
    return jnp.where(trunc.any(), moved, start)


def pad_after_terminal(tr: Transition) -> Window:
    """Pads one window [H, ...] after its first terminal transition (DESIGN §1 'Trajectory window')."""
    term = tr.terminal > 0
    after = jnp.cumsum(term) - term > 0  # strictly after the first terminal
    j = jnp.argmax(term)
    obs = jnp.where(after[:, None], tr.next_obs[j][None], tr.obs)
    action = jnp.where(after[:, None], 0.0, tr.action)
    reward = jnp.where(after, 0.0, tr.reward)
    terminal = jnp.where(after, 1.0, tr.terminal)
    return Window(obs, action, reward, terminal)


def sample_windows(replay: Replay, key: jax.Array, batch: int, horizon: int) -> Window:
    """`batch` windows of `horizon` consecutive transitions, uniform over envs and starts.

    Requires replay.size >= horizon (guaranteed after the random prefill).
    """
    n_envs = replay.data.obs.shape[0]
    k_env, k_start = jax.random.split(key)
    env = jax.random.randint(k_env, (batch,), 0, n_envs)
    start = jax.random.randint(k_start, (batch,), 0, jnp.maximum(replay.size - horizon + 1, 1))

    def one(e, s):
        s = _window_start(replay, e, s, horizon)
        return pad_after_terminal(_gather(replay, e, s + jnp.arange(horizon)))

    w = jax.vmap(one)(env, start)
    chex.assert_shape(w.reward, (batch, horizon))
    return w


def sample_starts(replay: Replay, key: jax.Array, batch: int):
    """`batch` start states uniform over the buffer: (obs [batch, obs_dim], physics [batch,
    n_phys]), the observation and the simulator state it was taken in."""
    n_envs = replay.data.obs.shape[0]
    k_env, k_idx = jax.random.split(key)
    env = jax.random.randint(k_env, (batch,), 0, n_envs)
    idx = _physical(replay, jax.random.randint(k_idx, (batch,), 0, jnp.maximum(replay.size, 1)))
    return replay.data.obs[env, idx], replay.physics[env, idx]

