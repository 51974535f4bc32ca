"""A2C in imagination: the PolyGRAD / AGD-MBRL reference learner (DESIGN §1 'Learning in
imagination').

GAE (lambda 0.9) bootstrapped from an EMA target critic; normalised advantages; loss weights
prod_{j<k}(1 - d_j) (fix: the reference's cumulative product also drops the terminal
transition itself); actor loss -log pi * A - 1e-5 entropy; critic 0.5 (target - V)^2; AdamW
with per-network global-norm clipping; the actor's learning rate (at most 3e-5) adapts so the
mean |Δ log pi| per update is about 0.01.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from agdjax.agents.gae import gae
from agdjax.networks import policy_dist


@struct.dataclass
class A2CState:
    actor: dict
    critic: dict
    target_critic: dict
    actor_opt: optax.OptState
    critic_opt: optax.OptState
    actor_lr: jax.Array  # float32 []


class Nets(NamedTuple):
    actor: Callable  # (params, raw obs) -> (mu, sigma)
    critic: Callable  # (params, raw obs) -> V


def actor_optimizer(cfg):
    """Adam direction with decoupled weight decay; the (adaptive) lr is applied outside."""
    return optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.scale_by_adam(),
                       optax.add_decayed_weights(cfg.weight_decay))


def critic_optimizer(cfg):
    return optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm),
                       optax.adamw(cfg.critic_lr, weight_decay=cfg.weight_decay))


def init(cfg, actor_params, critic_params) -> A2CState:
    return A2CState(actor_params, critic_params, critic_params,
                    actor_optimizer(cfg).init(actor_params), critic_optimizer(cfg).init(critic_params),
                    jnp.asarray(cfg.actor_lr_init, jnp.float32))


def loss_weights(terminal):
    """w_k = prod_{j<k} (1 - d_j): [B, T] -> [B, T] (the terminal transition keeps weight 1)."""
    alive = jnp.cumprod(1.0 - terminal, axis=1)
    return jnp.concatenate([jnp.ones_like(alive[:, :1]), alive[:, :-1]], axis=1)


def targets(cfg, nets: Nets, state: A2CState, obs, reward, terminal):
    """The A2C targets of transitions k = 0 … H-2 of imagined trajectories (raw units; obs
    [B, H, obs_dim], reward/terminal [B, H]): (normalised GAE advantage, critic returns, loss
    weights), each [B, H-1], gradients stopped."""
    r, d = reward[:, :-1], terminal[:, :-1]
    v_target = nets.critic(state.target_critic, obs)  # [B, H]
    adv = gae(r, cfg.gamma * (1.0 - d), v_target, cfg.gae_lambda)
    returns = jax.lax.stop_gradient(adv + v_target[:, :-1])
    adv_n = jax.lax.stop_gradient((adv - adv.mean()) / (adv.std() + 1e-8))
    return adv_n, returns, loss_weights(d)


def actor_loss(cfg, nets: Nets, actor_params, obs, action, adv_n, w):
    """-mean(w (log pi(a|s) A_n + entropy_coef H)) over [B, H-1] (obs, action: rows 0 … H-2).
    Returns (loss, log_prob [B, H-1])."""
    dist = policy_dist(*nets.actor(actor_params, obs))
    logp = dist.log_prob(action)
    return -(w * (logp * adv_n + cfg.entropy_coef * dist.entropy())).mean(), logp


def update(cfg, nets: Nets, state: A2CState, obs, action, reward, terminal):
    """One A2C update on imagined trajectories (raw units): obs [B, H, obs_dim],
    action [B, H, act_dim], reward/terminal [B, H]. Uses transitions k = 0 … H-2.

    Returns (new state, metrics dict of scalars).
    """
    s, a = obs[:, :-1], action[:, :-1]
    adv_n, returns, w = targets(cfg, nets, state, obs, reward, terminal)

    def critic_loss(p):
        return (w * 0.5 * (returns - nets.critic(p, s)) ** 2).mean()

    (a_loss, logp_old), a_grad = jax.value_and_grad(
        lambda p: actor_loss(cfg, nets, p, s, a, adv_n, w), has_aux=True)(state.actor)
    c_loss, c_grad = jax.value_and_grad(critic_loss)(state.critic)
    a_upd, actor_opt = actor_optimizer(cfg).update(a_grad, state.actor_opt, state.actor)
    actor = optax.apply_updates(state.actor, jax.tree.map(lambda u: -state.actor_lr * u, a_upd))
    c_upd, critic_opt = critic_optimizer(cfg).update(c_grad, state.critic_opt, state.critic)
    critic = optax.apply_updates(state.critic, c_upd)
    target = optax.incremental_update(critic, state.target_critic, 1.0 - cfg.target_critic_decay)

    logp_new = policy_dist(*nets.actor(actor, s)).log_prob(a)
    change = jnp.abs(logp_new - logp_old).mean()
    actor_lr = adapt_actor_lr(state.actor_lr, change, cfg.target_logprob_change, cfg.actor_lr_max)
    new = A2CState(actor, critic, target, actor_opt, critic_opt, actor_lr)
    return new, {"actor_loss": a_loss, "critic_loss": c_loss, "logprob_change": change,
                 "actor_lr": state.actor_lr,
                 "critic_explained_variance": explained_variance(returns, nets.critic(state.critic, s), w)}


def explained_variance(target, prediction, weight):
    """1 - Var(target - prediction) / Var(target), weighted by `weight` (all [B, T]): 1 for a
    perfect critic, 0 for one that predicts the mean, negative when worse."""
    mean = lambda x: (weight * x).sum() / jnp.maximum(weight.sum(), 1e-8)
    var = lambda x: mean((x - mean(x)) ** 2)
    return 1.0 - var(target - prediction) / (var(target) + 1e-8)


def adapt_actor_lr(lr, change, target: float, lr_max: float):
    """Multiplicative step towards mean |Δ log pi| = target, at most x2 or /2, capped at lr_max."""
    factor = jnp.clip(jnp.sqrt(target / (change + 1e-12)), 0.5, 2.0)
    return jnp.minimum(lr * factor, lr_max)
