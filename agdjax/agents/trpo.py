"""TRPO: KL-constrained natural-gradient policy steps, as an imagination learner (same
interface as `a2c`) and as the update of the model-free baseline (`agdjax.model_free`).

Source: Schulman et al. 2015 (arXiv 1502.05477), §6 and appendix C; the recipe of OpenAI
Spinning Up / baselines `trpo_mpi`. One update:
1. surrogate L(theta) = mean_w[pi_theta(a|s) / pi_old(a|s) * A] with normalised GAE advantages;
2. natural direction x = F^-1 g by `conjugate_gradient` (trpo_cg_iters), where g = grad L and
   F v = grad(<grad KL, v>) + damping v is a Hessian-vector product of the mean
   KL(pi_old || pi_theta) at theta_old (forward-over-reverse: jvp of the KL gradient), which is
   the Fisher-vector product;
3. full step sqrt(2 max_kl / x^T F x) x, then backtracking (factor trpo_backtrack_coef, at most
   trpo_backtrack_iters tries) accepting the first step with mean KL <= (1 + trpo_kl_tolerance)
   max_kl and a surrogate above L(theta_old); if none qualifies the actor is unchanged;
4. separate value regression: value_epochs full-batch Adam steps (value_lr) on
   0.5 (lambda-return - V)^2.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.flatten_util import ravel_pytree

from agdjax.agents import onpolicy
from agdjax.agents.a2c import Nets
from agdjax.agents.onpolicy import Batch, weighted_mean
from agdjax.networks import policy_dist


@struct.dataclass
class TRPOState:
    actor: dict
    critic: dict
    critic_opt: optax.OptState  # Adam (value_lr) of the value regression


def init(cfg, actor_params, critic_params, key=None) -> TRPOState:
    """`key` is unused (TRPO is deterministic given the batch); accepted for the same call as ppo.init."""
    del key
    return TRPOState(actor_params, critic_params, optax.adam(cfg.value_lr).init(critic_params))


def conjugate_gradient(matvec, b, iters: int):
    """Approximately solves A x = b for symmetric positive-definite A, given `matvec(v) = A v`.

    b: [n]. Runs exactly `iters` CG iterations from x = 0 (a `fori_loop`, so it can be jitted
    and vmapped); once the squared residual falls below 1e-20 the iterate stops changing.
    Returns x [n]. Source: Nocedal & Wright, Algorithm 5.2.
    """
    def body(_, c):
        x, r, p, rr = c
        ap = matvec(p)
        live = rr > 1e-20
        alpha = jnp.where(live, rr / jnp.where(live, p @ ap, 1.0), 0.0)
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = r @ r
        beta = jnp.where(live, rr_new / jnp.where(live, rr, 1.0), 0.0)
        return x, r, r + beta * p, rr_new

    x0 = jnp.zeros_like(b)
    x, *_ = jax.lax.fori_loop(0, iters, body, (x0, b, b, b @ b))
    return x


def update(cfg, nets: Nets, state: TRPOState, obs, action, reward, terminal):
    """One TRPO update on imagined trajectories (raw units): obs [B, H, obs_dim],
    action [B, H, act_dim], reward/terminal [B, H]. Uses transitions k = 0 … H-2 (like
    `a2c.update`). Returns (new state, metrics dict of scalars).
    """
    batch = onpolicy.from_imagination(cfg, nets, state.actor, state.critic, obs, action, reward, terminal)
    return update_batch(cfg, nets, state, batch)


def update_batch(cfg, nets: Nets, state: TRPOState, batch: Batch):
    """One TRPO policy step and value regression on a flat Batch. Returns (state, metrics)."""
    actor, a_metrics = policy_step(cfg, nets, state.actor, batch)
    critic, critic_opt, c_loss = value_regression(cfg, nets, state.critic, state.critic_opt, batch)
    return TRPOState(actor, critic, critic_opt), dict(a_metrics, critic_loss=c_loss)


def policy_step(cfg, nets: Nets, actor, batch: Batch):
    """Steps 1-3 of the module docstring. Returns (new actor params, metrics)."""
    adv = onpolicy.normalize_advantage(batch.advantage, batch.weight)
    flat0, unravel = ravel_pytree(actor)

    def dist(flat):
        return nets.actor(unravel(flat), batch.obs)

    def surrogate(flat):
        mean, std = dist(flat)
        ratio = jnp.exp(policy_dist(mean, std).log_prob(batch.action) - batch.log_prob)
        return weighted_mean(ratio * adv, batch.weight)

    def kl(flat):
        return weighted_mean(onpolicy.kl_from_batch(batch, *dist(flat)), batch.weight)

    def fisher_vector(v):
        return jax.jvp(jax.grad(kl), (flat0,), (v,))[1] + cfg.trpo_damping * v

    l0, g = jax.value_and_grad(surrogate)(flat0)
    x = conjugate_gradient(fisher_vector, g, cfg.trpo_cg_iters)
    xfx = jnp.maximum(x @ fisher_vector(x), 1e-12)
    full_step = jnp.sqrt(2.0 * cfg.trpo_max_kl / xfx) * x
    expected = g @ full_step
    kl_limit = (1.0 + cfg.trpo_kl_tolerance) * cfg.trpo_max_kl

    # backtracking line search: try fractions coef^0, coef^1, ... until one is accepted
    def try_step(c):
        j, _, _, _ = c
        frac = cfg.trpo_backtrack_coef ** j.astype(jnp.float32)
        flat = flat0 + frac * full_step
        l_new, kl_new = surrogate(flat), kl(flat)
        ok = (kl_new <= kl_limit) & (l_new > l0) & jnp.isfinite(l_new) & jnp.isfinite(kl_new)
        return j + 1, ok, jnp.where(ok, frac, 0.0), jnp.stack([l_new, kl_new])

    def not_done(c):
        j, ok, _, _ = c
        return (~ok) & (j < cfg.trpo_backtrack_iters)

    init_c = (jnp.zeros((), jnp.int32), jnp.zeros((), bool), jnp.zeros(()), jnp.zeros((2,)))
    _, accepted, frac, (l_new, kl_new) = jax.lax.while_loop(not_done, try_step, init_c)
    flat = flat0 + frac * full_step
    new_actor = unravel(flat)

    mean, std = dist(flat)
    new_dist = policy_dist(mean, std)
    logp_new = new_dist.log_prob(batch.action)
    metrics = {
        "actor_loss": -jnp.where(accepted, l_new, l0),
        "kl": jnp.where(accepted, kl_new, 0.0),
        "entropy": weighted_mean(new_dist.entropy(), batch.weight),
        "step_fraction": frac,
        "accepted": accepted.astype(jnp.float32),
        "expected_improvement": expected,
        "logprob_change": weighted_mean(jnp.abs(logp_new - batch.log_prob), batch.weight),
    }
    return new_actor, metrics


def value_regression(cfg, nets: Nets, critic, critic_opt, batch: Batch):
    """value_epochs full-batch Adam steps on 0.5 (returns - V)^2. Returns (critic, opt, mean loss)."""
    tx = optax.adam(cfg.value_lr)

    def loss_fn(p):
        return weighted_mean(0.5 * (batch.returns - nets.critic(p, batch.obs)) ** 2, batch.weight)

    def step(c, _):
        p, opt = c
        loss, grad = jax.value_and_grad(loss_fn)(p)
        upd, opt = tx.update(grad, opt, p)
        return (optax.apply_updates(p, upd), opt), loss

    (critic, critic_opt), losses = jax.lax.scan(step, (critic, critic_opt), None, length=cfg.value_epochs)
    return critic, critic_opt, losses.mean()
