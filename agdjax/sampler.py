"""The guided reverse sampler: denoiser + policy guidance on actions + state guide.

Reads like DESIGN §1 'Policy-guided reverse sampling' and 'Advantage guidance'. For
t = T-1 … 0 (at t = 0 the posterior std is ~1e-10, so noise and the state guide vanish, and
the action step is switched off explicitly):
  1. x0_hat = f(x_t, sqrt(alpha_bar_t) a_t, t); re-impose s_0
  2. posterior mean mu_t and std sigma_t of q(x_{t-1} | x_t, x0_hat)
  3. actions: clip to mu_pi ± 3 sigma_pi at s_hat, ascent step delta * grad log pi, noise
  4. state guide: s_hat <- s_hat + c sigma_t^4 G; recompute mu_t
  5. clamp mu_t - x_t to ±0.25 for t <= 10; x_{t-1} = mu_t + sigma_t eps; re-impose s_0
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp

from agdjax import diffusion
from agdjax.guidance import policy_guided_actions, state_guide_gradient
from agdjax.normalize import unpack


class Imagined(NamedTuple):
    """Imagined trajectories in raw units: obs [B, H, obs_dim], action [B, H, act_dim],
    reward [B, H], terminal [B, H] (0/1), plus the policy's (mu, sigma) at the final
    states and actions, [B, H, act_dim] each."""
    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    terminal: jax.Array
    policy_mean: jax.Array
    policy_std: jax.Array


class SamplerFns(NamedTuple):
    """Pure functions the sampler calls (parameters already bound)."""
    denoise: Callable  # (x_t [B,H,D], scaled actions [B,H,A], t [B]) -> x0_hat
    actor: Callable  # raw obs -> (mu, sigma)
    value: Callable  # raw obs -> V
    reward: Callable  # (raw obs, raw action) -> r_phi


def sample(fns: SamplerFns, sched: diffusion.Schedule, norm, s0_raw, key, *, delta,
           guide: str, guide_scale: float, gamma: float, act_dim: int,
           clip_sigmas: float = 3.0, clamp_last_steps: int = 10, clamp_value: float = 0.25,
           horizon: int, action_guidance: bool = True) -> Imagined:
    """Generates trajectories from start states s0_raw [B, obs_dim] (raw units).

    `delta`: action-guidance scale (scalar). `guide` in none/sag/eag/reward with scale c =
    `guide_scale`. `action_guidance=False` disables the policy step (for tests/ablations).
    """
    b, obs_dim = s0_raw.shape
    n_steps = sched.betas.shape[0]
    s0 = norm.obs.normalize(s0_raw)
    k_x, k_a, k_loop = jax.random.split(key, 3)
    x = diffusion.inpaint(jax.random.normal(k_x, (b, horizon, obs_dim + 2)), s0)
    a = jax.random.normal(k_a, (b, horizon, act_dim))

    def reverse_step(carry, inputs):
        x_t, a_t = carry
        t_int, k = inputs
        t = jnp.full((b,), t_int)
        k_a, k_x = jax.random.split(k)
        # 1-2: predict x0, posterior
        x0_hat = diffusion.inpaint(fns.denoise(x_t, diffusion.scaled_actions(sched, a_t, t), t), s0)
        mu, sigma = diffusion.posterior(sched, x0_hat, x_t, t)
        # 3: policy guidance on actions (raw units), then noise in normalised units
        s_hat_raw = norm.obs.unnormalize(x0_hat[..., :obs_dim])
        take_step = jnp.asarray(action_guidance, jnp.float32) * (t_int > 0)
        a_raw, mu_pi, sigma_pi = policy_guided_actions(
            fns.actor, s_hat_raw, norm.action.unnormalize(a_t), delta, clip_sigmas, take_step)
        a_next = norm.action.normalize(a_raw) + sigma * jax.random.normal(k_a, a_t.shape)
        # 4: advantage (or reward) guidance on the predicted clean states
        if guide != "none":
            g = state_guide_gradient(guide, x0_hat[..., :obs_dim], x0_hat[..., -2], x0_hat[..., -1],
                                     a_raw, norm.obs, norm.reward, fns.value, fns.reward, gamma)
            x0_hat = x0_hat.at[..., :obs_dim].add(guide_scale * sigma**4 * g)
            mu, _ = diffusion.posterior(sched, x0_hat, x_t, t)
        # 5: clamp the final mu_t near the end of sampling, add noise, re-impose s_0
        mu = jnp.where(t_int <= clamp_last_steps, x_t + jnp.clip(mu - x_t, -clamp_value, clamp_value), mu)
        x_prev = diffusion.inpaint(mu + sigma * jax.random.normal(k_x, x_t.shape), s0)
        return (x_prev, a_next), (mu_pi, sigma_pi)

    ts = jnp.arange(n_steps - 1, -1, -1)
    (x0, a0), (mu_pi, sigma_pi) = jax.lax.scan(
        reverse_step, (x, a), (ts, jax.random.split(k_loop, n_steps)))
    obs, reward, term = unpack(norm, x0)
    chex.assert_shape(obs, (b, horizon, obs_dim))
    return Imagined(obs, norm.action.unnormalize(a0), reward, (term > 0.5).astype(jnp.float32),
                    mu_pi[-1], sigma_pi[-1])

