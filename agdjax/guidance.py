"""Guides of the reverse sampler: PolyGRAD policy guidance on actions, and the AGD state
guides `sag`, `eag` and the online `reward` guide. Small pure functions.

Sources: PolyGRAD (Rigter et al. 2024, Alg. 1) for the action step; AGD-MBRL (Foffano et
al. 2026) for SAG/EAG. Fix (DESIGN §1 'Advantage guidance'): the critic is trained on raw
states and rewards, so states and rewards are un-normalised before V and the gradient flows
through that map.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from agdjax.networks import policy_dist


def one_step_advantage(value_fn, obs, reward, terminal, gamma: float):
    """A_k = r_k + gamma (1 - d_k) V(s_{k+1}) - V(s_k), k = 0 … H-2.

    obs [B, H, obs_dim] raw, reward [B, H] raw, terminal [B, H] in {0,1}.
    value_fn: raw obs [..., obs_dim] -> [...]. Returns [B, H-1].
    """
    v = value_fn(obs)
    return reward[:, :-1] + gamma * (1.0 - terminal[:, :-1]) * v[:, 1:] - v[:, :-1]


def guide_objective(guide: str, advantage=None, reward=None):
    """The log-weight whose gradient is the state guide G (summed over the batch).

    sag: sum_k log sigmoid(A_k); eag: sum_k A_k (log of exp(A)); reward: sum_k r_phi.
    """
    if guide == "sag":
        return jax.nn.log_sigmoid(advantage).sum()
    if guide == "eag":
        return advantage.sum()
    if guide == "reward":
        return reward.sum()
    raise ValueError(f"guide={guide!r} has no state objective; allowed: sag, eag, reward")


def state_guide_gradient(guide: str, s_hat, reward_norm, terminal, actions_raw, obs_norm,
                         reward_stats, value_fn, reward_fn, gamma: float, last_row: bool = False):
    """G = grad_{s_hat} objective, in normalised state space, rows 0 and H-1 set to zero
    (the reference's `grad[:, :-1]`); `last_row=True` keeps row H-1's gradient (ablation,
    `Config.guide_last_row`).

    s_hat [B, H, obs_dim] normalised predicted clean states; reward_norm [B, H] normalised
    generated rewards; terminal [B, H] generated terminal values (thresholded at 0.5);
    actions_raw [B, H, act_dim]; obs_norm / reward_stats: RunningStats used to un-normalise.
    value_fn / reward_fn: raw inputs. Rewards and terminals are under stop-gradient.
    """
    reward_raw = jax.lax.stop_gradient(reward_stats.unnormalize(reward_norm[..., None])[..., 0])
    done = jax.lax.stop_gradient((terminal > 0.5).astype(jnp.float32))

    def objective(s):
        obs = obs_norm.unnormalize(s)
        if guide == "reward":
            return guide_objective(guide, reward=reward_fn(obs, actions_raw))
        return guide_objective(guide, advantage=one_step_advantage(value_fn, obs, reward_raw, done, gamma))

    g = jax.grad(objective)(s_hat)
    row_mask = jnp.ones((s_hat.shape[1], 1)).at[0].set(0.0).at[-1].set(1.0 if last_row else 0.0)
    return g * row_mask


def policy_guided_actions(actor_fn, obs_raw, actions_raw, delta, clip_sigmas: float, take_step):
    """Clip actions to mu_pi ± clip_sigmas sigma_pi and take one ascent step on log pi.

    a <- clip(a) + take_step * delta * grad_a log pi(a | s), with s = obs_raw under
    stop-gradient. obs_raw [B, H, obs_dim], actions_raw [B, H, act_dim] (raw units).
    Returns (actions [B, H, act_dim], mu_pi, sigma_pi).
    """
    mu, sigma = actor_fn(jax.lax.stop_gradient(obs_raw))
    a = jnp.clip(actions_raw, mu - clip_sigmas * sigma, mu + clip_sigmas * sigma)
    grad_logp = jax.grad(lambda a_: policy_dist(mu, sigma).log_prob(a_).sum())(a)
    return a + take_step * delta * grad_logp, mu, sigma


def action_z_std(action, policy_mean, policy_std):
    """The delta-tuning statistic: z = (a - mu_pi) / sigma_pi, its std (unbiased, as torch.std)
    over the batch and rows 0 … H-2 per action dimension, then the mean over dimensions.

    action, policy_mean, policy_std [B, H, act_dim] -> scalar. Source: PolyGRAD
    `utils/evaluation.py:get_standardized_stats` (`std(dim=[0, 1])` of rows [:, :-1]), used in
    `agent/a2c.py`. The last row has no transition that the learner trains on.
    """
    z = (action[:, :-1] - policy_mean[:, :-1]) / policy_std[:, :-1]
    return z.std(axis=(0, 1), ddof=1).mean()


def delta_update(log_delta, z_std, lr: float):
    """log delta <- log delta + lr (z_std - 1): imagined actions spread wider than the policy
    (z_std > 1) raise delta, i.e. pull them harder towards it (PolyGRAD `a2c.py`)."""
    return log_delta + lr * (z_std - 1.0)
