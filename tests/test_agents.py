"""A2C pieces: GAE known answers, loss weights, the adaptive actor step, one update."""
import jax
import jax.numpy as jnp
import numpy as np

from agdjax.agents import a2c
from agdjax.agents.gae import gae
from agdjax.config import make_config
from agdjax.networks import Actor, Critic


def gae_reference(r, d, v, gamma, lam):
    adv = np.zeros_like(r)
    last = 0.0
    for t in reversed(range(len(r))):
        delta = r[t] + gamma * (1 - d[t]) * v[t + 1] - v[t]
        last = delta + gamma * lam * (1 - d[t]) * last
        adv[t] = last
    return adv


def test_gae_matches_hand_computation_with_termination():
    rng = np.random.default_rng(0)
    r, v = rng.normal(size=(2, 6)), rng.normal(size=(2, 7))
    d = np.zeros((2, 6)); d[1, 2] = 1.0
    got = np.asarray(gae(jnp.asarray(r), 0.99 * (1 - jnp.asarray(d)), jnp.asarray(v), 0.9))
    for b in range(2):
        np.testing.assert_allclose(got[b], gae_reference(r[b], d[b], v[b], 0.99, 0.9), rtol=1e-5, atol=1e-6)


def test_loss_weights_keep_the_terminal_transition():
    d = jnp.array([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    np.testing.assert_array_equal(np.asarray(a2c.loss_weights(d)), [[1, 1, 0, 0], [1, 1, 1, 1]])


def test_adaptive_actor_lr():
    assert float(a2c.adapt_actor_lr(1e-5, 0.04, 0.01, 3e-5)) == np.float32(0.5e-5)  # too big a change: halve
    assert abs(float(a2c.adapt_actor_lr(1e-5, 0.0025, 0.01, 3e-5)) - 2e-5) < 1e-10  # too small: double
    assert abs(float(a2c.adapt_actor_lr(2.5e-5, 0.001, 0.01, 3e-5)) - 3e-5) < 1e-10  # capped at the max


def test_a2c_update_fits_critic_and_raises_advantaged_log_prob():
    cfg = make_config("halfcheetah", "smoke")
    obs_dim, act_dim, B, H = 3, 2, 64, 5
    actor, critic = Actor(act_dim, 32), Critic(32)
    k = jax.random.PRNGKey(0)
    state = a2c.init(cfg, actor.init(k, jnp.zeros((1, obs_dim))), critic.init(k, jnp.zeros((1, obs_dim))))
    state = state.replace(actor_lr=jnp.float32(3e-3))
    nets = a2c.Nets(actor.apply, critic.apply)
    obs = jax.random.normal(k, (B, H, obs_dim))
    action = jax.random.normal(jax.random.PRNGKey(1), (B, H, act_dim))
    reward = action[..., 0]  # reward favours a large first action dimension
    term = jnp.zeros((B, H))
    mu0 = actor.apply(state.actor, obs)[0][..., 0].mean()
    losses = []
    for _ in range(30):
        state, m = a2c.update(cfg, nets, state, obs, action, reward, term)
        losses.append(float(m["critic_loss"]))
    mu1 = actor.apply(state.actor, obs)[0][..., 0].mean()
    assert losses[-1] < losses[0]
    assert float(mu1) > float(mu0), "the policy mean should move towards rewarded actions"
    assert all(np.isfinite(losses))
