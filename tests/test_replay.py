"""Replay windows: time order, padding after a terminal, never joining two episodes;
running normaliser against numpy."""
import jax
import jax.numpy as jnp
import numpy as np

from agdjax import normalize, replay as rb
from agdjax.envs import Transition


def _fill(n_steps, obs_dim=2, act_dim=1, terminal_at=(), truncated_at=(), capacity=64):
    rep = rb.init(1, capacity, obs_dim, act_dim)
    for k in range(n_steps):
        tr = Transition(
            obs=jnp.full((1, obs_dim), float(k)), action=jnp.full((1, act_dim), float(k)),
            reward=jnp.full((1,), 10.0 + k), next_obs=jnp.full((1, obs_dim), k + 0.5),
            terminal=jnp.full((1,), float(k in terminal_at)),
            truncated=jnp.full((1,), float(k in truncated_at)))
        rep = rb.add(rep, tr)
    return rep


def test_pad_after_terminal_known_answer():
    rep = _fill(10, terminal_at=(5,))
    w = rb.pad_after_terminal(rb._gather(rep, 0, 3 + jnp.arange(5)))  # steps 3..7, terminal at 5
    np.testing.assert_array_equal(np.asarray(w.obs[:, 0]), [3, 4, 5, 5.5, 5.5])  # state repeats s_6
    np.testing.assert_array_equal(np.asarray(w.terminal), [0, 0, 1, 1, 1])
    np.testing.assert_array_equal(np.asarray(w.reward), [13, 14, 15, 0, 0])
    np.testing.assert_array_equal(np.asarray(w.action[:, 0]), [3, 4, 5, 0, 0])


def test_windows_are_consecutive_and_never_join_episodes():
    # episode ends by time limit at step 19 (truncated), next episode starts at 20
    rep = _fill(40, truncated_at=(19,))
    w = rb.sample_windows(rep, jax.random.PRNGKey(0), 512, 5)
    s = np.asarray(w.obs[..., 0])
    assert np.all(np.diff(s, axis=1) == 1), "rows must be consecutive steps"
    starts, ends = s[:, 0], s[:, -1]
    crosses = (starts <= 19) & (ends >= 20)
    assert not crosses.any(), "a window joined two episodes across a truncation"
    assert (ends == 19).any() and (starts == 20).any()


def test_windows_after_ring_wraparound_stay_in_time_order():
    rep = _fill(100, capacity=32)  # only the last 32 steps remain
    assert int(rep.size) == 32
    w = rb.sample_windows(rep, jax.random.PRNGKey(1), 256, 4)
    s = np.asarray(w.obs[..., 0])
    assert s.min() >= 68 and s.max() <= 99
    assert np.all(np.diff(s, axis=1) == 1)
    obs = np.asarray(rb.sample_starts(rep, jax.random.PRNGKey(2), 256)[0][:, 0])
    assert obs.min() >= 68 and obs.max() <= 99


def test_running_normaliser_matches_numpy():
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(300, 4)).astype(np.float32)
    n = normalize.init(4, 1)
    for chunk in np.split(x, 6):
        n = normalize.update(n, jnp.asarray(chunk), jnp.zeros((50, 1)), jnp.zeros((50,)))
    np.testing.assert_allclose(np.asarray(n.obs.mean), x.mean(0), rtol=1e-4)
    np.testing.assert_allclose(np.asarray(n.obs.std), x.std(0), rtol=1e-3)
    z = n.obs.normalize(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(n.obs.unnormalize(z)), x, rtol=1e-4, atol=1e-4)


def test_pack_keeps_terminals_binary():
    n = normalize.init(2, 1)
    n = normalize.update(n, jnp.ones((4, 2)) * 7, jnp.zeros((4, 1)), jnp.arange(4.0))
    x = normalize.pack(n, jnp.ones((1, 3, 2)), jnp.ones((1, 3)), jnp.array([[0.0, 1.0, 1.0]]))
    np.testing.assert_array_equal(np.asarray(x[0, :, -1]), [0, 1, 1])
