"""PPO: clipped-surrogate policy optimisation, as an imagination learner (same interface as
`a2c`) and as the update of the model-free baseline (`agdjax.model_free`).

Source: Schulman et al. 2017 (arXiv 1707.06347), eq. 7 (clipped surrogate) and eq. 9 (value
loss and entropy bonus); layout after purejaxrl `ppo_continuous_action.py` and brax
`training/agents/ppo/losses.py`. One update: GAE with the current critic, weighted advantage
normalisation over the whole batch, then `ppo_epochs` passes of `ppo_minibatches` shuffled
minibatches; each step minimises
  clipped surrogate + ppo_value_coef * 0.5 (returns - V)^2 - entropy_coef_ppo * entropy
(all weighted means) with Adam (ppo_lr) after a global-norm clip (ppo_max_grad_norm) over the
actor and critic gradients together.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import struct

from agdjax.agents import onpolicy
from agdjax.agents.a2c import Nets
from agdjax.agents.onpolicy import Batch, weighted_mean
from agdjax.networks import policy_dist


@struct.dataclass
class PPOState:
    actor: dict
    critic: dict
    opt: optax.OptState  # Adam over {"actor": actor, "critic": critic}
    key: jax.Array  # PRNG key for the minibatch shuffles


def optimizer(cfg):
    return optax.chain(optax.clip_by_global_norm(cfg.ppo_max_grad_norm), optax.adam(cfg.ppo_lr))


def init(cfg, actor_params, critic_params, key=None) -> PPOState:
    """`key`: PRNG key for minibatch shuffles; pass a per-seed key (None -> PRNGKey(0))."""
    key = jax.random.PRNGKey(0) if key is None else key
    opt = optimizer(cfg).init({"actor": actor_params, "critic": critic_params})
    return PPOState(actor_params, critic_params, opt, key)


def clipped_surrogate_loss(ratio, advantage, clip: float):
    """Per-sample PPO loss -min(rho A, clip(rho, 1-eps, 1+eps) A) (eq. 7, negated): [N] -> [N]."""
    return -jnp.minimum(ratio * advantage, jnp.clip(ratio, 1.0 - clip, 1.0 + clip) * advantage)


def update(cfg, nets: Nets, state: PPOState, obs, action, reward, terminal):
    """One PPO update on imagined trajectories (raw units): obs [B, H, obs_dim],
    action [B, H, act_dim], reward/terminal [B, H]. Uses transitions k = 0 … H-2 (like
    `a2c.update`); B * (H-1) must be a multiple of cfg.ppo_minibatches.

    Returns (new state, metrics dict of scalars).
    """
    batch = onpolicy.from_imagination(cfg, nets, state.actor, state.critic, obs, action, reward, terminal)
    return update_batch(cfg, nets, state, batch)


def update_batch(cfg, nets: Nets, state: PPOState, batch: Batch):
    """One PPO update (ppo_epochs x ppo_minibatches gradient steps) on a flat Batch of N
    transitions; N must be a multiple of cfg.ppo_minibatches. Returns (state, metrics)."""
    n = batch.obs.shape[0]
    m = cfg.ppo_minibatches
    if n % m:
        raise ValueError(f"PPO batch of {n} transitions is not a multiple of ppo_minibatches={m}")
    batch = batch._replace(advantage=onpolicy.normalize_advantage(batch.advantage, batch.weight))
    tx = optimizer(cfg)

    def loss_fn(params, mb: Batch):
        mean, std = nets.actor(params["actor"], mb.obs)
        dist = policy_dist(mean, std)
        ratio = jnp.exp(dist.log_prob(mb.action) - mb.log_prob)
        pg = weighted_mean(clipped_surrogate_loss(ratio, mb.advantage, cfg.ppo_clip), mb.weight)
        v_loss = weighted_mean(0.5 * (mb.returns - nets.critic(params["critic"], mb.obs)) ** 2, mb.weight)
        entropy = weighted_mean(dist.entropy(), mb.weight)
        total = pg + cfg.ppo_value_coef * v_loss - cfg.entropy_coef_ppo * entropy
        clipped = weighted_mean((jnp.abs(ratio - 1.0) > cfg.ppo_clip).astype(jnp.float32), mb.weight)
        return total, {"actor_loss": pg, "critic_loss": v_loss, "entropy": entropy, "clip_fraction": clipped}

    def step(carry, mb):
        params, opt = carry
        grad, aux = jax.grad(loss_fn, has_aux=True)(params, mb)
        upd, opt = tx.update(grad, opt, params)
        return (optax.apply_updates(params, upd), opt), dict(aux, grad_norm=optax.tree.norm(grad))

    def epoch(carry, k):
        perm = jax.random.permutation(k, n)
        mbs = jax.tree.map(lambda x: x[perm].reshape((m, n // m) + x.shape[1:]), batch)
        return jax.lax.scan(step, carry, mbs)

    key, k_shuffle = jax.random.split(state.key)
    params = {"actor": state.actor, "critic": state.critic}
    (params, opt), metrics = jax.lax.scan(epoch, (params, state.opt),
                                          jax.random.split(k_shuffle, cfg.ppo_epochs))
    metrics = jax.tree.map(jnp.mean, metrics)

    mean, std = nets.actor(params["actor"], batch.obs)
    logp_new = policy_dist(mean, std).log_prob(batch.action)
    metrics.update(
        kl=weighted_mean(onpolicy.kl_from_batch(batch, mean, std), batch.weight),
        logprob_change=weighted_mean(jnp.abs(logp_new - batch.log_prob), batch.weight))
    return PPOState(params["actor"], params["critic"], opt, key), metrics
