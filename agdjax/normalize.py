"""Running per-dimension mean/std of observations, actions and rewards.

Fix (DESIGN §1 'Normaliser'): the reference recomputes statistics over the whole buffer after
every episode; here they are merged incrementally (Chan et al. parallel variance), which gives
the same numbers for the same data. Terminal flags are never normalised.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

_EPS = 1e-6


@struct.dataclass
class RunningStats:
    count: jax.Array  # float32 []
    mean: jax.Array  # [dim]
    m2: jax.Array  # [dim], sum of squared deviations

    @property
    def std(self):
        var = self.m2 / jnp.maximum(self.count, 1.0)
        return jnp.sqrt(jnp.maximum(var, 0.0)) + _EPS

    def normalize(self, x):
        return (x - self.mean) / self.std

    def unnormalize(self, x):
        return x * self.std + self.mean


def init_stats(dim: int) -> RunningStats:
    return RunningStats(jnp.zeros(()), jnp.zeros((dim,)), jnp.zeros((dim,)))


def update_stats(stats: RunningStats, x: jax.Array) -> RunningStats:
    """Merges a batch `x` of shape [N, dim] into `stats`."""
    n = jnp.asarray(x.shape[0], jnp.float32)
    mean_b = x.mean(0)
    m2_b = ((x - mean_b) ** 2).sum(0)
    total = stats.count + n
    delta = mean_b - stats.mean
    mean = stats.mean + delta * n / total
    m2 = stats.m2 + m2_b + delta**2 * stats.count * n / total
    return RunningStats(total, mean, m2)


@struct.dataclass
class Normalizer:
    obs: RunningStats
    action: RunningStats
    reward: RunningStats  # dim 1


def init(obs_dim: int, act_dim: int) -> Normalizer:
    return Normalizer(init_stats(obs_dim), init_stats(act_dim), init_stats(1))


def update(norm: Normalizer, obs, action, reward) -> Normalizer:
    """obs [N, obs_dim], action [N, act_dim], reward [N]."""
    return Normalizer(update_stats(norm.obs, obs), update_stats(norm.action, action),
                      update_stats(norm.reward, reward[:, None]))


def pack(norm: Normalizer, obs, reward, terminal):
    """Raw window -> diffusion rows x = [s, r, d] normalised: obs [..., H, obs_dim],
    reward/terminal [..., H] -> x [..., H, obs_dim + 2]."""
    s = norm.obs.normalize(obs)
    r = norm.reward.normalize(reward[..., None])
    return jnp.concatenate([s, r, terminal[..., None]], axis=-1)


def unpack(norm: Normalizer, x):
    """Diffusion rows x [..., H, obs_dim+2] -> raw (obs, reward, terminal_logit_value)."""
    obs = norm.obs.unnormalize(x[..., :-2])
    reward = norm.reward.unnormalize(x[..., -2:-1])[..., 0]
    return obs, reward, x[..., -1]
