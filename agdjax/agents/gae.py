"""Generalised advantage estimation over a batch of trajectories, via rlax.

Source: Schulman et al. 2016; `rlax.truncated_generalized_advantage_estimation`.
"""
from __future__ import annotations

import jax
import rlax


def gae(reward, discount, values, lam: float):
    """GAE for a batch. reward/discount [B, T], values [B, T+1] (last is the bootstrap).

    `discount` is gamma * (1 - terminal): zero where the MDP terminated. Returns advantages
    [B, T]; the lambda-returns are advantages + values[:, :-1].
    """
    return jax.vmap(lambda r, d, v: rlax.truncated_generalized_advantage_estimation(r, d, lam, v))(
        reward, discount, values)
