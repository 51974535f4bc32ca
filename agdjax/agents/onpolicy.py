"""What PPO and TRPO share: a flat batch of weighted on-policy transitions, built either from
imagined trajectories (the `a2c.update` inputs) or from real-environment rollouts, and the
weighted statistics their losses use.

A `Batch` holds N transitions with the behaviour policy's distribution (mean, std, log_prob),
the GAE advantages and lambda-returns, and a loss weight (0 for imagined padding after a
terminal, 1 otherwise).
"""
from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from agdjax.agents.a2c import Nets, loss_weights
from agdjax.agents.gae import gae, gae_truncation_aware
from agdjax.networks import policy_dist


class Batch(NamedTuple):
    """N on-policy transitions, raw units. Everything is under stop-gradient."""
    obs: jax.Array  # [N, obs_dim]
    action: jax.Array  # [N, act_dim], the sampled (unclipped) action
    mean: jax.Array  # [N, act_dim], behaviour policy mean
    std: jax.Array  # [N, act_dim], behaviour policy std
    log_prob: jax.Array  # [N], behaviour policy log pi(a | s)
    advantage: jax.Array  # [N], GAE (not normalised)
    returns: jax.Array  # [N], lambda-returns, the critic's regression target
    weight: jax.Array  # [N], loss weight in {0, 1}


def weighted_mean(x, w):
    """sum(w * x) / sum(w) over all elements (0 if every weight is 0)."""
    return (w * x).sum() / jnp.maximum(w.sum(), 1e-8)


def normalize_advantage(adv, w):
    """(adv - mean) / (std + 1e-8) with weighted mean and std: [N] -> [N]."""
    mu = weighted_mean(adv, w)
    std = jnp.sqrt(weighted_mean((adv - mu) ** 2, w))
    return (adv - mu) / (std + 1e-8)


def _flatten(*xs):
    return [x.reshape((-1,) + x.shape[2:]) for x in xs]


def _policy(nets: Nets, actor, obs, action):
    mean, std = nets.actor(actor, obs)
    return mean, std, policy_dist(mean, std).log_prob(action)


def from_imagination(cfg, nets: Nets, actor, critic, obs, action, reward, terminal) -> Batch:
    """Imagined trajectories (the inputs of `a2c.update`) -> Batch of N = B * (H-1).

    obs [B, H, obs_dim], action [B, H, act_dim], reward/terminal [B, H], raw units. Uses the
    transitions k = 0 … H-2; GAE (cfg.gamma, cfg.gae_lambda) bootstraps from the current
    critic at row H-1 and is cut by d_k; loss weights prod_{j<k}(1 - d_j) as in A2C.
    """
    chex.assert_rank([obs, action, reward, terminal], [3, 3, 2, 2])
    chex.assert_equal_shape_prefix([obs, action, reward, terminal], 2)
    s, a = obs[:, :-1], action[:, :-1]
    r, d = reward[:, :-1], terminal[:, :-1]
    v = nets.critic(critic, obs)  # [B, H]
    adv = gae(r, cfg.gamma * (1.0 - d), v, cfg.gae_lambda)
    mean, std, logp = _policy(nets, actor, s, a)
    batch = Batch(*_flatten(s, a, mean, std, logp, adv, adv + v[:, :-1], loss_weights(d)))
    return jax.tree.map(jax.lax.stop_gradient, batch)


class Rollout(NamedTuple):
    """Real-environment rollout, [n_envs, T, ...], raw units (see envs.Transition)."""
    obs: jax.Array  # [n_envs, T, obs_dim]
    action: jax.Array  # [n_envs, T, act_dim], sampled before the environment clips it
    reward: jax.Array  # [n_envs, T]
    next_obs: jax.Array  # [n_envs, T, obs_dim], true next obs (before any reset)
    terminal: jax.Array  # [n_envs, T]
    truncated: jax.Array  # [n_envs, T]


def from_rollout(cfg, nets: Nets, actor, critic, ro: Rollout) -> Batch:
    """Real rollout -> Batch of N = n_envs * T with truncation-aware GAE (weights all 1)."""
    chex.assert_rank([ro.obs, ro.action, ro.reward, ro.terminal, ro.truncated], [3, 3, 2, 2, 2])
    v = nets.critic(critic, ro.obs)
    v_next = nets.critic(critic, ro.next_obs)
    adv = gae_truncation_aware(ro.reward, ro.terminal, ro.truncated, v, v_next, cfg.gamma, cfg.gae_lambda)
    mean, std, logp = _policy(nets, actor, ro.obs, ro.action)
    batch = Batch(*_flatten(ro.obs, ro.action, mean, std, logp, adv, adv + v, jnp.ones_like(adv)))
    return jax.tree.map(jax.lax.stop_gradient, batch)


def kl_from_batch(batch: Batch, mean, std):
    """KL(behaviour || new) per transition: [N]. `mean`, `std` [N, act_dim] of the new policy."""
    return policy_dist(batch.mean, batch.std).kl_divergence(policy_dist(mean, std))
