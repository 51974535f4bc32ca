"""PPO and TRPO: truncation-aware GAE, the clipped surrogate, conjugate gradient, the TRPO trust
region, updates on imagined batches, config checks, and smoke runs of the model-free program."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agdjax.agents import a2c, onpolicy, ppo, trpo
from agdjax.agents.gae import gae, gae_truncation_aware
from agdjax.config import ConfigError, make_config
from agdjax.networks import Actor, Critic, policy_dist


# ----------------------------------------------------------------------------- GAE
def test_truncation_aware_gae_hand_computed():
    # gamma 0.9, lambda 0.5; row 0 terminates at t=1, row 1 is truncated at t=1 where the true
    # next observation has V = 10 (the value of the reset state, 1.5, must not be used).
    r = jnp.array([[1.0, 2.0, 3.0, 4.0]] * 2)
    v = jnp.array([[0.5, 1.0, 1.5, 2.0]] * 2)
    v_next = jnp.array([[1.0, 10.0, 2.0, 3.0]] * 2)
    term = jnp.array([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    trunc = jnp.array([[0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    got = np.asarray(gae_truncation_aware(r, term, trunc, v, v_next, 0.9, 0.5))
    # deltas: t0 1+0.9*1-0.5=1.4; t1 2-1=1 (terminal) or 2+9-1=10 (truncated); t2 3+1.8-1.5=3.3;
    # t3 4+2.7-2=4.7. A3=4.7, A2=3.3+0.45*4.7=5.415, A1=delta1 (trace cut), A0=1.4+0.45*A1.
    np.testing.assert_allclose(got[0], [1.85, 1.0, 5.415, 4.7], rtol=1e-6)
    np.testing.assert_allclose(got[1], [5.9, 10.0, 5.415, 4.7], rtol=1e-6)


def test_truncation_aware_gae_equals_plain_gae_without_time_limits():
    rng = np.random.default_rng(0)
    r, v = rng.normal(size=(3, 7)), rng.normal(size=(3, 8))
    d = np.zeros((3, 7)); d[1, 3] = 1.0
    got = gae_truncation_aware(jnp.asarray(r), jnp.asarray(d), jnp.zeros((3, 7)), jnp.asarray(v[:, :-1]),
                               jnp.asarray(v[:, 1:]), 0.99, 0.9)
    want = gae(jnp.asarray(r), 0.99 * (1 - jnp.asarray(d)), jnp.asarray(v), 0.9)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- PPO loss
def test_clipped_surrogate_known_numbers():
    ratio = jnp.array([0.5, 1.0, 1.5, 1.5, 0.5])
    adv = jnp.array([1.0, 2.0, 1.0, -1.0, -1.0])
    loss = ppo.clipped_surrogate_loss(ratio, adv, 0.2)
    # -min(r A, clip(r, .8, 1.2) A)
    np.testing.assert_allclose(np.asarray(loss), [-0.5, -2.0, -1.2, 1.5, 0.8], rtol=1e-6)
    grad = jax.grad(lambda r: ppo.clipped_surrogate_loss(r, adv, 0.2).sum())(ratio)
    # no gradient where the clipped term is the minimum (rows 2 and 4)
    np.testing.assert_allclose(np.asarray(grad), [-1.0, -2.0, 0.0, 1.0, 0.0], rtol=1e-6)


# ----------------------------------------------------------------------------- CG
def test_conjugate_gradient_solves_spd_system():
    rng = np.random.default_rng(1)
    m = rng.normal(size=(6, 6))
    a = jnp.asarray(m @ m.T + 0.5 * np.eye(6), jnp.float32)
    b = jnp.asarray(rng.normal(size=6), jnp.float32)
    want = np.linalg.solve(np.asarray(a, np.float64), np.asarray(b, np.float64))
    x = trpo.conjugate_gradient(lambda v: a @ v, b, 20)  # more iterations than dimensions: stays put
    np.testing.assert_allclose(np.asarray(x), want, rtol=1e-3, atol=1e-3)
    x2 = jax.jit(lambda bb: trpo.conjugate_gradient(lambda v: a @ v, bb, 2))(b)
    err = lambda x: (x - want) @ np.asarray(a, np.float64) @ (x - want)  # CG minimises the A-norm error
    assert err(np.asarray(x2, np.float64)) < 0.9 * err(np.zeros(6))
    d = jnp.array([1.0, 2.0, 4.0])  # diagonal: exact after 3 iterations
    np.testing.assert_allclose(np.asarray(trpo.conjugate_gradient(lambda v: d * v, jnp.ones(3), 3)),
                               [1.0, 0.5, 0.25], rtol=1e-5)


# ----------------------------------------------------------------------------- updates
OBS, ACT, B, H = 3, 2, 64, 5


def imagined_batch(seed=0):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    obs = jax.random.normal(k1, (B, H, OBS))
    action = jax.random.normal(k2, (B, H, ACT))
    reward = action[..., 0]  # reward favours a large first action dimension
    term = jnp.zeros((B, H)).at[3, 1].set(1.0).at[7, 3].set(1.0)
    return obs, action, reward, term


def setup(module, cfg):
    actor, critic = Actor(ACT, 32), Critic(32)
    k_a, k_c = jax.random.split(jax.random.PRNGKey(0))
    state = module.init(cfg, actor.init(k_a, jnp.zeros((1, OBS))), critic.init(k_c, jnp.zeros((1, OBS))),
                        jax.random.PRNGKey(5))
    return actor, a2c.Nets(actor.apply, critic.apply), state


def surrogate_and_kl(nets, batch, new_actor):
    adv = onpolicy.normalize_advantage(batch.advantage, batch.weight)
    mean, std = nets.actor(new_actor, batch.obs)
    new = policy_dist(mean, std)
    ratio = jnp.exp(new.log_prob(batch.action) - batch.log_prob)
    surr = onpolicy.weighted_mean(ratio * adv, batch.weight)
    kl = onpolicy.weighted_mean(policy_dist(batch.mean, batch.std).kl_divergence(new), batch.weight)
    return float(surr), float(kl)


def test_imagined_batch_weights_drop_padding_after_terminal():
    cfg = make_config("halfcheetah", "smoke")
    _, nets, state = setup(ppo, cfg)
    batch = onpolicy.from_imagination(cfg, nets, state.actor, state.critic, *imagined_batch())
    w = np.asarray(batch.weight).reshape(B, H - 1)
    np.testing.assert_array_equal(w[3], [1, 1, 0, 0])  # terminal at k=1 keeps weight, later rows 0
    np.testing.assert_array_equal(w[7], [1, 1, 1, 1])
    assert batch.obs.shape == (B * (H - 1), OBS)


@pytest.mark.parametrize("max_kl", [0.01, 0.001])
def test_trpo_step_stays_in_trust_region_and_improves_surrogate(max_kl):
    cfg = make_config("halfcheetah", "smoke", trpo_max_kl=max_kl)
    _, nets, state = setup(trpo, cfg)
    data = imagined_batch()
    batch = onpolicy.from_imagination(cfg, nets, state.actor, state.critic, *data)
    new, m = jax.jit(lambda s: trpo.update(cfg, nets, s, *data))(state)
    surr0, kl0 = surrogate_and_kl(nets, batch, state.actor)
    surr1, kl1 = surrogate_and_kl(nets, batch, new.actor)
    assert abs(kl0) < 1e-6 and abs(surr0) < 1e-5  # ratio 1 and normalised advantages at the start
    assert float(m["accepted"]) == 1.0
    assert 0.0 < kl1 <= max_kl * (1 + cfg.trpo_kl_tolerance) + 1e-6
    assert surr1 > surr0
    np.testing.assert_allclose(float(m["kl"]), kl1, rtol=1e-3)
    np.testing.assert_allclose(float(m["actor_loss"]), -surr1, rtol=1e-3, atol=1e-6)


def test_trpo_rejects_a_step_that_cannot_satisfy_the_line_search():
    # with zero advantages no step improves the surrogate: nothing is accepted, the actor stays.
    cfg = make_config("halfcheetah", "smoke")
    _, nets, state = setup(trpo, cfg)
    obs, action, _, term = imagined_batch()
    batch = onpolicy.from_imagination(cfg, nets, state.actor, state.critic, obs, action,
                                      jnp.zeros((B, H)), term)
    batch = batch._replace(advantage=jnp.zeros_like(batch.advantage))
    actor, m = trpo.policy_step(cfg, nets, state.actor, batch)
    assert float(m["accepted"]) == 0.0 and float(m["step_fraction"]) == 0.0
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), actor, state.actor)


@pytest.mark.parametrize("module", [ppo, trpo], ids=["ppo", "trpo"])
def test_update_on_imagined_batch(module):
    cfg = make_config("halfcheetah", "smoke")
    actor, nets, state = setup(module, cfg)
    data = imagined_batch()
    upd = jax.jit(lambda s: module.update(cfg, nets, s, *data))
    mu0 = float(actor.apply(state.actor, data[0])[0][..., 0].mean())
    s, losses = state, []
    for _ in range(5):
        s, m = upd(s)
        assert {"actor_loss", "critic_loss", "kl"} <= set(m)
        assert all(np.isfinite(float(v)) and np.shape(v) == () for v in m.values()), m
        losses.append(float(m["critic_loss"]))
    assert float(m["kl"]) > 0.0
    assert losses[-1] < losses[0]
    mu1 = float(actor.apply(s.actor, data[0])[0][..., 0].mean())
    assert mu1 > mu0, "the policy mean should move towards rewarded actions"
    if module is ppo:
        assert not np.array_equal(np.asarray(s.key), np.asarray(state.key))


def test_ppo_minibatch_count_must_divide_the_batch():
    cfg = make_config("halfcheetah", "smoke", ppo_minibatches=5)  # agent a2c: not checked
    _, nets, state = setup(ppo, cfg)
    with pytest.raises(ValueError, match="ppo_minibatches"):
        ppo.update(cfg, nets, state, *imagined_batch())  # 64 * 4 = 256 transitions


# ----------------------------------------------------------------------------- config
def test_config_checks():
    with pytest.raises(ConfigError, match="a2c"):
        make_config("halfcheetah", "smoke", model_free=True)
    with pytest.raises(ConfigError, match="ppo_minibatches"):
        make_config("halfcheetah", "smoke", agent="ppo", ppo_minibatches=5)  # 8 * 3 = 24
    with pytest.raises(ConfigError, match="unroll_length"):
        make_config("halfcheetah", "smoke", agent="ppo", model_free=True, unroll_length=3)
    with pytest.raises(ConfigError, match="trpo_backtrack_coef"):
        make_config("halfcheetah", "smoke", agent="trpo", trpo_backtrack_coef=1.0)
    with pytest.raises(ConfigError, match="ppo_epochs"):
        make_config("halfcheetah", "smoke", agent="ppo", ppo_epochs=0)
    cfg = make_config("halfcheetah", "smoke", agent="ppo", model_free=True, unroll_length=4)
    assert cfg.rollout_length == 4 and cfg.transitions_per_update == 8
    for preset in ("paper", "cpu", "smoke"):
        for agent in ("ppo", "trpo"):
            make_config("halfcheetah", preset, agent=agent)
            make_config("halfcheetah", preset, agent=agent, model_free=True)


# ----------------------------------------------------------------------------- model-free smoke
def run_model_free(agent, seeds=(0,)):
    from agdjax.model_free import make_model_free_train
    cfg = make_config("halfcheetah", "smoke", backend="positional", model_free=True, agent=agent)
    prog = make_model_free_train(cfg)
    init = jax.jit(jax.vmap(prog.init))
    run_chunk = jax.jit(jax.vmap(prog.run_chunk, in_axes=(0, None)))
    state = init(jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds, jnp.uint32)))
    chunks = []
    L = cfg.iters_per_chunk
    for c in range(math.ceil((cfg.n_iters + 1) / L)):
        state, m = run_chunk(state, jnp.int32(c * L))
        chunks.append(jax.tree.map(np.asarray, m))
    metrics = {k: np.concatenate([m[k] for m in chunks], axis=1) for k in chunks[0]}  # [seeds, iters]
    return cfg, state, metrics


@pytest.mark.parametrize("agent", ["ppo", "trpo"])
def test_model_free_smoke(agent):
    cfg, state, m = run_model_free(agent)
    E, n = cfg.env_steps_per_iter, cfg.n_iters  # 16 env steps per iteration, 4 iterations
    iters = np.arange(m["eval_return"].shape[1])
    evaluated = iters[np.isfinite(m["eval_return"][0])]
    np.testing.assert_array_equal(evaluated * E, [0, 32, 64])
    for k in ("actor_loss", "critic_loss", "kl"):
        assert np.all(np.isfinite(m[k][0, :n])), (k, m[k])
        assert np.all(np.isnan(m[k][0, n:])), (k, m[k])
    assert np.isfinite(m["train_return"][0, n - 1])  # smoke episodes are 20 steps: some ended
    assert np.all(m["kl"][0, :n] > 0)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state.agent))
