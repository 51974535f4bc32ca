"""The batched environment step (`envs.step_batch`, used by collection and model-free
rollouts) equals the per-environment `envs.step` vmapped, resets included, with and without a
seed vmap around it."""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from agdjax import envs


def _rollout(step_fn, carry, actions):
    return jax.lax.scan(lambda c, a: step_fn(c, a), carry, actions)


def test_step_batch_equals_vmapped_step_with_resets():
    env = envs.make_env("halfcheetah", "positional")
    n, T, L = 3, 7, 3  # episode length 3: time-limit resets at steps 3 and 6
    carry = jax.vmap(functools.partial(envs.reset, env))(jax.random.split(jax.random.PRNGKey(0), n))
    actions = jax.random.uniform(jax.random.PRNGKey(1), (T, n, env.action_size), minval=-1.5, maxval=1.5)
    per_env = jax.vmap(functools.partial(envs.step, env, episode_length=L, action_bound=1.0))
    batch = functools.partial(envs.step_batch, env, episode_length=L, action_bound=1.0)
    a = jax.jit(functools.partial(_rollout, per_env))(carry, actions)
    b = jax.jit(functools.partial(_rollout, batch))(carry, actions)
    assert float(a[1].truncated.sum()) == 2 * n  # both resets happened
    # float32 rounding only: XLA compiles the three programs differently, and 7 chaotic physics
    # steps grow that to ~1e-4 (CI with mujoco 4.0.1: 5 of 357 entries 4e-5..1.2e-4 apart, at
    # rtol = atol = 1e-5); a wrong reset or a swapped environment is off by O(1)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-3, atol=1e-3)
    # under a seed vmap (the cond becomes a select): the same again, seed by seed
    carries = jax.tree.map(lambda x: jnp.stack([x, x]), carry)
    c = jax.jit(jax.vmap(functools.partial(_rollout, batch), in_axes=(0, None)))(carries, actions)
    for x, y in zip(jax.tree.leaves(b), jax.tree.leaves(c)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y)[1], rtol=1e-3, atol=1e-3)


def test_environment_gets_the_clipped_action_and_the_transition_keeps_the_raw_one():
    """The reference's action rule (Config.env_action 'clipped'; PolyGRAD `ClippedActionWrapper`):
    the simulator is given the action clipped to [-1, 1], so the next observation and the reward
    (its control cost included) are those of the clipped action, while the transition the
    replay stores keeps the raw sample. Under action_bound=None (the 'raw' ablation) the
    physics still clamps the action but the control cost is charged on the raw one."""
    env = envs.make_env("halfcheetah", "positional")
    carry = envs.reset(env, jax.random.PRNGKey(0))
    step = jax.jit(functools.partial(envs.step, env, episode_length=1000, action_bound=1.0))
    step_raw = jax.jit(functools.partial(envs.step, env, episode_length=1000, action_bound=None))
    big = jnp.full((env.action_size,), 2.5).at[0].set(-3.0)
    clipped = jnp.clip(big, -1.0, 1.0)
    (_, tr_big), (_, tr_one), (_, tr_raw) = step(carry, big), step(carry, clipped), step_raw(carry, big)
    np.testing.assert_allclose(np.asarray(tr_big.action), np.asarray(big))
    np.testing.assert_allclose(np.asarray(tr_raw.action), np.asarray(big))
    np.testing.assert_allclose(np.asarray(tr_big.next_obs), np.asarray(tr_one.next_obs), atol=1e-6)
    np.testing.assert_allclose(np.asarray(tr_raw.next_obs), np.asarray(tr_one.next_obs), atol=1e-6)
    np.testing.assert_allclose(float(tr_big.reward), float(tr_one.reward), atol=1e-6)
    ctrl = 0.1 * float(jnp.sum(big ** 2 - clipped ** 2))  # Brax halfcheetah: ctrl_cost_weight 0.1
    np.testing.assert_allclose(float(tr_one.reward - tr_raw.reward), ctrl, rtol=1e-4)


def test_every_stepping_function_takes_the_rule():
    """step_batch (collection, model-free), rollout (oracle, world-model error) and evaluate
    clip by default and charge the raw action under action_bound=None; the training program's
    collection step takes the config's rule (Config.env_action)."""
    from agdjax.config import make_config
    from agdjax.train import make_setup
    env = envs.make_env("halfcheetah", "positional")
    n = 2
    carry = jax.vmap(functools.partial(envs.reset, env))(jax.random.split(jax.random.PRNGKey(0), n))
    big = jnp.full((n, env.action_size), 2.0)
    extra = 0.1 * env.action_size * (2.0 ** 2 - 1.0)  # the raw action's extra control cost
    r = lambda bound: jax.jit(functools.partial(envs.step_batch, env, episode_length=1000,
                                                action_bound=bound))(carry, big)[1].reward
    np.testing.assert_allclose(np.asarray(r(1.0) - r(None)), extra, rtol=1e-4)
    template = jax.tree.map(lambda x: x[0], carry.state)
    physics = jax.vmap(envs.physics_state)(carry.state)
    ro = lambda bound: jax.jit(lambda: envs.rollout(env, template, physics, carry.state.obs, lambda a, o: a,
                                                    big[None], action_bound=bound))()[2]
    np.testing.assert_allclose(np.asarray(ro(1.0) - ro(None)), extra, rtol=1e-4)
    ev = lambda bound: float(jax.jit(lambda: envs.evaluate(env, lambda o: jnp.full((o.shape[0], env.action_size), 2.0),
                                                           jax.random.PRNGKey(1), 2, 3, action_bound=bound))())
    np.testing.assert_allclose(ev(1.0) - ev(None), 3 * extra, rtol=1e-3)
    for rule, bound in (("clipped", 1.0), ("raw", None)):
        cfg = make_config("halfcheetah", "smoke", backend="positional", env_action=rule)
        got = jax.jit(make_setup(cfg).env_step)(carry, big)[1].reward
        np.testing.assert_allclose(np.asarray(got), np.asarray(r(bound)), rtol=1e-5, atol=1e-5)


def test_sampled_evaluation_starts_where_the_mean_one_does_and_draws_its_own_keys():
    """envs.evaluate(sampled=True) (eval_return_sampled): the episodes start from the states
    of the deterministic evaluation at the same key (a key-blind policy gives the same return
    exactly), and step t's action gets key t of split(fold_in(key, 1), episode_length): a
    known answer by a Python loop over the simulator."""
    env = envs.make_env("halfcheetah", "positional")
    key, n, L = jax.random.PRNGKey(3), 2, 4
    push = lambda o: jnp.tanh(o[:, :env.action_size])  # state-dependent, key-blind
    ev = lambda fn, sampled: float(jax.jit(lambda: envs.evaluate(env, fn, key, n, L, action_bound=1.0,
                                                                 sampled=sampled))())
    assert ev(push, False) == ev(lambda k, o: push(o), True)
    noisy = lambda k, o: push(o) + 2.0 * jax.random.normal(k, (o.shape[0], env.action_size))
    got = ev(noisy, True)
    assert abs(got - ev(push, False)) > 1e-3  # the noise is drawn and reaches the simulator
    state = jax.vmap(functools.partial(envs.reset, env))(jax.random.split(key, n)).state
    ret = np.zeros(n)
    sim = jax.jit(jax.vmap(functools.partial(envs.sim_step, env, action_bound=1.0)))
    for k in jax.random.split(jax.random.fold_in(key, 1), L):
        state = sim(state, noisy(k, state.obs))
        ret += np.asarray(state.reward)
    np.testing.assert_allclose(got, ret.mean(), rtol=1e-4, atol=1e-4)
