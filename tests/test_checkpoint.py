"""Checkpoint round trip of a state holding zero-size arrays (MJX states do; Orbax alone
refuses to save them)."""
import jax.numpy as jnp
import numpy as np

from agdjax.checkpoint import Checkpointer


def test_zero_size_leaves_round_trip(tmp_path):
    state = {"w": jnp.arange(6.0).reshape(2, 3), "act": jnp.zeros((2, 0), jnp.float32),
             "key": jnp.array([[1, 2], [3, 4]], jnp.uint32)}
    ck = Checkpointer(str(tmp_path / "ckpt"), log_fn=lambda *a: None)
    ck.save(3, state, {"step": 3})
    restored = ck.restore_step(3, state)
    assert restored.step == 3
    for k in state:
        assert restored.state[k].shape == state[k].shape and restored.state[k].dtype == state[k].dtype
        np.testing.assert_array_equal(np.asarray(restored.state[k]), np.asarray(state[k]))
    ck.close()
