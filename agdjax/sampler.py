"""The guided reverse sampler: denoiser + policy guidance on actions + state guide.

Reads like DESIGN §1 'Policy-guided reverse sampling' and 'Advantage guidance'. For
t = T-1 … 0 (at t = 0 the posterior std is ~1e-10, so noise and the state guide vanish, and
the action step is switched off explicitly):
  1. x0_hat = f(x_t, sqrt(alpha_bar_t) a_env, t); re-impose s_0. a_env is the action in the
     form the replay stores (the world model is trained on it): the raw action in the training
     program (envs.REPLAY_ACTIONS), or a_t clipped to [-action_bound, action_bound] for an
     environment that stores clipped actions
  2. posterior mean mu_t and std sigma_t of q(x_{t-1} | x_t, x0_hat)
  3. actions: clip to mu_pi ± 3 sigma_pi at s_hat, ascent step delta * grad log pi, noise
     (log pi of the policy's own, unclipped action)
  4. state guide: s_hat <- s_hat + c sigma_t^4 G; recompute mu_t
  5. clamp mu_t - x_t to ±0.25 for t <= clamp_last_steps; x_{t-1} = mu_t + sigma_t eps;
     re-impose s_0
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import chex
import jax
import jax.numpy as jnp

from agdjax import diffusion
from agdjax.envs import clip_action
from agdjax.guidance import policy_guided_actions, state_guide_gradient
from agdjax.normalize import unpack


class Imagined(NamedTuple):
    """Imagined trajectories in raw units: obs [B, H, obs_dim], action [B, H, act_dim] (the
    policy's own action, not clipped to the environment's range), reward [B, H], terminal
    [B, H] (0/1), the policy's (mu, sigma) at the final states and actions, [B, H, act_dim]
    each, and guide_step_ratio [] (mean over steps t >= 1 of ||c sigma_t^4 G|| / ||x0_hat
    states||, norms over the batch; 0 for guide none)."""
    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    terminal: jax.Array
    policy_mean: jax.Array
    policy_std: jax.Array
    guide_step_ratio: jax.Array


class SamplerFns(NamedTuple):
    """Pure functions the sampler calls (parameters already bound)."""
    denoise: Callable  # (x_t [B,H,D], scaled actions [B,H,A], t [B]) -> x0_hat
    actor: Callable  # raw obs -> (mu, sigma)
    value: Callable  # raw obs -> V
    reward: Callable  # (raw obs, raw action) -> r_phi


class Guidance(NamedTuple):
    """Settings of one reverse step (see `sample` for their meaning)."""
    delta: jax.Array
    guide: str
    guide_scale: float
    gamma: float
    clip_sigmas: float = 3.0
    clamp_last_steps: int = 10
    clamp_value: float = 0.25
    action_bound: Optional[float] = 1.0
    action_guidance: bool = True
    scale_actions: bool = True
    guide_last_row: bool = False


def env_actions(norm, a_norm, action_bound):
    """Normalised actions [..., A] -> (raw actions clipped to [-action_bound, action_bound]
    (not clipped when action_bound is None),
    the same re-normalised): what the environment would have executed and stored."""
    a_raw = clip_action(norm.action.unnormalize(a_norm), action_bound)
    return a_raw, norm.action.normalize(a_raw)


def reverse_step(fns: SamplerFns, sched: diffusion.Schedule, norm, s0, g: Guidance, x_t, a_t, t_int, key,
                 model_t=None):
    """One guided reverse step t -> t-1 (module docstring, steps 1-5).

    s0 [B, obs_dim] normalised start states; x_t [B, H, obs_dim+2], a_t [B, H, act_dim]
    normalised; t_int an int scalar, the step of `sched`; model_t the step of the trained
    chain that the denoiser is given (default t_int; differs on a respaced chain,
    `diffusion.respace`); key split into (k_a, k_x) for the action and state noise.
    Returns (x_prev, a_prev, (mu_pi, sigma_pi, guide_ratio)), guide_ratio = ||c sigma_t^4 G||
    / ||x0_hat states|| (0 for guide none).
    """
    b, _, d = x_t.shape
    obs_dim = d - 2
    t = jnp.full((b,), t_int)
    t_model = t if model_t is None else jnp.full((b,), model_t)
    k_a, k_x = jax.random.split(key)
    # 1-2: predict x0 from the environment-range actions, posterior
    a_env = env_actions(norm, a_t, g.action_bound)[1]
    x0_hat = diffusion.inpaint(fns.denoise(x_t, diffusion.scaled_actions(sched, a_env, t, g.scale_actions), t_model), s0)
    mu, sigma = diffusion.posterior(sched, x0_hat, x_t, t)
    # 3: policy guidance on actions (raw units) at the predicted clean states, then noise
    s_hat_raw = norm.obs.unnormalize(x0_hat[..., :obs_dim])
    take_step = jnp.asarray(g.action_guidance, jnp.float32) * (t_int > 0)
    a_raw, mu_pi, sigma_pi = policy_guided_actions(
        fns.actor, s_hat_raw, norm.action.unnormalize(a_t), g.delta, g.clip_sigmas, take_step)
    a_prev = norm.action.normalize(a_raw) + sigma * jax.random.normal(k_a, a_t.shape)
    # 4: advantage (or reward) guidance on the predicted clean states
    ratio = jnp.float32(0.0)
    if g.guide != "none":
        grad = state_guide_gradient(g.guide, x0_hat[..., :obs_dim], x0_hat[..., -2], x0_hat[..., -1],
                                    clip_action(a_raw, g.action_bound), norm.obs,
                                    norm.reward, fns.value, fns.reward, g.gamma, g.guide_last_row)
        step = g.guide_scale * sigma**4 * grad
        ratio = jnp.linalg.norm(step) / jnp.maximum(jnp.linalg.norm(x0_hat[..., :obs_dim]), 1e-12)
        x0_hat = x0_hat.at[..., :obs_dim].add(step)
        mu, _ = diffusion.posterior(sched, x0_hat, x_t, t)
    # 5: clamp the final mu_t near the end of sampling, add noise, re-impose s_0
    clamped = x_t + jnp.clip(mu - x_t, -g.clamp_value, g.clamp_value)
    mu = jnp.where(t_int <= g.clamp_last_steps, clamped, mu)
    x_prev = diffusion.inpaint(mu + sigma * jax.random.normal(k_x, x_t.shape), s0)
    return x_prev, a_prev, (mu_pi, sigma_pi, ratio)


def sample(fns: SamplerFns, sched: diffusion.Schedule, norm, s0_raw, key, *, delta,
           guide: str, guide_scale: float, gamma: float, act_dim: int, horizon: int,
           clip_sigmas: float = 3.0, clamp_last_steps: int = 10, clamp_value: float = 0.25,
           action_bound: Optional[float] = 1.0, action_guidance: bool = True,
           scale_actions: bool = True, timesteps=None, guide_last_row: bool = False) -> Imagined:
    """Generates trajectories from start states s0_raw [B, obs_dim] (raw units).

    `delta`: action-guidance scale (scalar). `guide` in none/sag/eag/reward with scale c =
    `guide_scale`. `clamp_last_steps`: mu_t - x_t is clamped to ±clamp_value for t <= this
    (-1: never). `action_bound`: the action range [-bound, bound] in raw units the replay
    stores (None: the raw action, as the training program does),
    which the denoiser and the reward model see. `action_guidance=False` disables the policy
    step (for tests/ablations). `scale_actions`: the denoiser sees sqrt(alpha_bar_t) * a (as
    in training; `diffusion.scaled_actions`). `timesteps` [K]: with a respaced `sched` of K
    steps (`diffusion.respace`), the trained chain's step that each step stands for (given
    to the denoiser); None: `sched` is the trained chain. `guide_last_row`: the state guide
    also moves row H-1 (ablation; the reference does not).
    """
    b, obs_dim = s0_raw.shape
    n_steps = sched.betas.shape[0]
    s0 = norm.obs.normalize(s0_raw)
    g = Guidance(delta, guide, guide_scale, gamma, clip_sigmas, clamp_last_steps, clamp_value,
                 action_bound, action_guidance, scale_actions, guide_last_row)
    k_x, k_a, k_loop = jax.random.split(key, 3)
    x = diffusion.inpaint(jax.random.normal(k_x, (b, horizon, obs_dim + 2)), s0)
    a = jax.random.normal(k_a, (b, horizon, act_dim))

    def body(carry, inputs):
        t, key, model_t = inputs
        x_prev, a_prev, info = reverse_step(fns, sched, norm, s0, g, *carry, t, key, model_t)
        return (x_prev, a_prev), info

    ts = jnp.arange(n_steps - 1, -1, -1)
    model_ts = ts if timesteps is None else jnp.asarray(timesteps)[ts]
    (x0, a0), (mu_pi, sigma_pi, ratio) = jax.lax.scan(body, (x, a), (ts, jax.random.split(k_loop, n_steps),
                                                                     model_ts))
    obs, reward, term = unpack(norm, x0)
    chex.assert_shape(obs, (b, horizon, obs_dim))
    guide_step_ratio = ratio[:-1].sum() / max(n_steps - 1, 1)  # steps t >= 1 (the last one is t = 0)
    return Imagined(obs, norm.action.unnormalize(a0), reward, (term > 0.5).astype(jnp.float32),
                    mu_pi[-1], sigma_pi[-1], guide_step_ratio)
