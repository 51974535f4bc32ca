"""Generalised advantage estimation over a batch of trajectories, via rlax.

Source: Schulman et al. 2016; `rlax.truncated_generalized_advantage_estimation`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import rlax


def gae(reward, discount, values, lam: float):
    """GAE for a batch. reward/discount [B, T], values [B, T+1] (last is the bootstrap).

    `discount` is gamma * (1 - terminal): zero where the MDP terminated. Returns advantages
    [B, T]; the lambda-returns are advantages + values[:, :-1].
    """
    return jax.vmap(lambda r, d, v: rlax.truncated_generalized_advantage_estimation(r, d, lam, v))(
        reward, discount, values)


def gae_truncation_aware(reward, terminal, truncated, value, next_value, gamma: float, lam: float):
    """GAE for real-environment rollouts that keeps termination and truncation apart.

    All inputs [B, T] in time order, raw units: `value` = V(obs_t), `next_value` = V(next_obs_t)
    with next_obs_t the true next observation (before any automatic reset). Per step
      delta_t = r_t + gamma * (1 - terminal_t) * next_value_t - value_t
      A_t     = delta_t + gamma * lam * (1 - terminal_t) * (1 - truncated_t) * A_{t+1},
    and A_T = 0, so a time-limit truncation bootstraps from V(next_obs_t) but the trace stops
    there, a termination bootstraps from 0, and the last step of the rollout bootstraps from
    V(next_obs_{T-1}). Returns advantages [B, T]; the lambda-returns are advantages + value.
    Source: Schulman et al. 2016; brax `training/agents/ppo/losses.compute_gae` (truncation).
    """
    not_term = 1.0 - terminal
    delta = reward + gamma * not_term * next_value - value
    trace = gamma * lam * not_term * (1.0 - truncated)

    def body(a_next, x):
        d, c = x
        a = d + c * a_next
        return a, a

    _, adv = jax.lax.scan(body, jnp.zeros_like(reward[:, 0]), (delta.T, trace.T), reverse=True)
    return adv.T
