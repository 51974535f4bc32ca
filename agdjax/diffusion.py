"""Noise schedule, forward noising, the x0 loss and the Gaussian posterior.

Conventions (diffuser / PolyGRAD): T betas, step index t in {0, ..., T-1},
alpha_bar[t] = prod_{i<=t} (1 - beta_i), alpha_bar[-1] := 1. Trajectory rows are
x [.., H, obs_dim + 2] = [s, r, d]; the first state s_0 = x[.., 0, :obs_dim] is in-painted.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class Schedule:
    betas: jax.Array  # [T]
    alpha_bar: jax.Array  # [T]
    alpha_bar_prev: jax.Array  # [T]
    posterior_var: jax.Array  # [T]
    posterior_log_var: jax.Array  # [T], clipped at 1e-20 before the log
    coef_x0: jax.Array  # [T]
    coef_xt: jax.Array  # [T]


def cosine_schedule(n_steps: int, tau: float = 1.0, s: float = 0.008, max_beta: float = 0.999) -> Schedule:
    """Cosine schedule with temperature: alpha_bar(u) ∝ cos(((u+s)/(1+s)) pi/2)^(2 tau).

    Source: Nichol & Dhariwal (2021) eq. 17 with the PolyGRAD temperature `tau`;
    betas clipped at `max_beta`, alpha_bar recomputed from the clipped betas.
    """
    u = jnp.linspace(0.0, 1.0, n_steps + 1, dtype=jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
    f = jnp.maximum(jnp.cos((u + s) / (1 + s) * jnp.pi / 2), 0.0) ** (2 * tau)  # cos(pi/2) < 0 in fp32
    betas = jnp.clip(1.0 - f[1:] / f[:-1], 0.0, max_beta).astype(jnp.float32)
    return _schedule(betas, jnp.cumprod(1.0 - betas))


def respace(sched: Schedule, n_steps: int):
    """The reverse chain of a T-step schedule on `n_steps` = K <= T evenly spaced steps:
    (Schedule of K steps, timesteps int32 [K]), timesteps[k] the step of the T-step chain that
    step k stands for (what the denoiser is given as t).

    Source: Nichol & Dhariwal (2021), "Improved DDPM", §4: the kept steps are
    round(k (T-1)/(K-1)), k = 0..K-1 (the first and last step kept); alpha_bar_k is the T-step
    alpha_bar at the kept step, beta_k = 1 - alpha_bar_k / alpha_bar_{k-1} (alpha_bar_{-1} = 1),
    and the posterior is that of the K-step chain. K = T returns `sched` itself and 0..T-1.

    Raises:
      ValueError: n_steps is not in 1..T.
    """
    total = sched.betas.shape[0]
    if not 1 <= n_steps <= total:
        raise ValueError(f"sampling_steps={n_steps} must be in 1..{total} (the trained number of diffusion steps)")
    if n_steps == total:
        return sched, jnp.arange(total, dtype=jnp.int32)
    stride = (total - 1) / max(n_steps - 1, 1)
    kept = jnp.asarray(sorted({int(round(k * stride)) for k in range(n_steps)}), jnp.int32)
    alpha_bar = sched.alpha_bar[kept]
    betas = 1.0 - alpha_bar / jnp.concatenate([jnp.ones((1,), alpha_bar.dtype), alpha_bar[:-1]])
    return _schedule(betas, alpha_bar), kept


def _schedule(betas, alpha_bar) -> Schedule:
    """The Schedule of a chain with these betas [T] and alpha_bar [T] (= cumprod(1 - betas))."""
    alpha_bar_prev = jnp.concatenate([jnp.ones((1,), alpha_bar.dtype), alpha_bar[:-1]])
    posterior_var = betas * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)
    return Schedule(
        betas=betas,
        alpha_bar=alpha_bar,
        alpha_bar_prev=alpha_bar_prev,
        posterior_var=posterior_var,
        posterior_log_var=jnp.log(jnp.maximum(posterior_var, 1e-20)),
        coef_x0=betas * jnp.sqrt(alpha_bar_prev) / (1.0 - alpha_bar),
        coef_xt=(1.0 - alpha_bar_prev) * jnp.sqrt(1.0 - betas) / (1.0 - alpha_bar),
    )


def q_sample(sched: Schedule, x0, t, noise):
    """Forward noising x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps. x0 [B, H, D], t [B]."""
    ab = sched.alpha_bar[t][:, None, None]
    return jnp.sqrt(ab) * x0 + jnp.sqrt(1.0 - ab) * noise


def posterior(sched: Schedule, x0_hat, x_t, t):
    """q(x_{t-1} | x_t, x0_hat): returns (mean, std) with mean shaped like x_t, std [B,1,1].

    Closed form (Ho et al. 2020 eq. 7). `t` int [B].
    """
    c0 = sched.coef_x0[t][:, None, None]
    ct = sched.coef_xt[t][:, None, None]
    std = jnp.exp(0.5 * sched.posterior_log_var[t])[:, None, None]
    return c0 * x0_hat + ct * x_t, std


def inpaint(x, s0):
    """Overwrites the first state row: x [B, H, D], s0 [B, obs_dim]."""
    return x.at[:, 0, : s0.shape[-1]].set(s0)


def scaled_actions(sched: Schedule, actions, t, scale: bool = True):
    """The actions as the denoiser sees them: sqrt(alpha_bar_t) * a (no noise; the reference's
    `q_sample(a, t, noise=0)`) when `scale`, else a itself. actions [B, H, A], t int [B].
    Unscaled, the conditioning keeps its full size at high noise levels, where the
    trajectory's rewards and states are first laid down (docs/RESULTS.md)."""
    if not scale:
        return actions
    return jnp.sqrt(sched.alpha_bar[t])[:, None, None] * actions


def x0_loss(denoise_fn, sched: Schedule, x0, actions, key, obs_dim: int, scale_actions: bool = True):
    """Mean squared error of x0 prediction over all entries except s_0.

    denoise_fn(x_t, scaled_actions, t) -> x0_hat. x0 [B, H, D] normalised, actions [B, H, A]
    normalised. Source: PolyGRAD `GaussianDiffusion.p_losses` (predict x0, in-paint s_0).
    """
    b = x0.shape[0]
    k_t, k_eps = jax.random.split(key)
    t = jax.random.randint(k_t, (b,), 0, sched.betas.shape[0])
    s0 = x0[:, 0, :obs_dim]
    x_t = inpaint(q_sample(sched, x0, t, jax.random.normal(k_eps, x0.shape)), s0)
    x0_hat = inpaint(denoise_fn(x_t, scaled_actions(sched, actions, t, scale_actions), t), s0)
    mask = jnp.ones(x0.shape[1:]).at[0, :obs_dim].set(0.0)
    return (((x0_hat - x0) ** 2) * mask).sum() / (mask.sum() * b)
