"""Seeds sharded over several devices (a `seeds` mesh axis, agdjax/loop.py) give the run the
unsharded program gives. XLA's CPU client is told to expose 2 host devices, which needs a fresh
process: the sharded runs happen in subprocesses (tests/sharded_run.py)."""
import json
import os
import sys

import numpy as np
import pytest

from agdjax import loop
from agdjax.train import EVAL_METRICS
from test_train import check_rows, smoke
import childproc  # tests/childproc.py: a child's crash is rerun like a worker's
from sharded_run import learned_parameters

# measured on this machine: at most 1e-5 apart (a denoiser kernel; most leaves 1e-7 or less),
# while training moved the biases from 0 by up to 5e-3
PARAM_RTOL, PARAM_ATOL = 1e-4, 5e-5

HERE = os.path.dirname(os.path.abspath(__file__))


def sharded(tmp_path, name, *args, n_devices=2):
    out = tmp_path / f"{name}.json"
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={n_devices}"
    env = dict(os.environ, XLA_FLAGS=flags.strip())
    proc = childproc.run([sys.executable, os.path.join(HERE, "sharded_run.py"), str(out), *args],
                         env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_sharded_two_seeds_equal_unsharded(smoke_runs, tmp_path):
    """2 seeds on 2 devices (one each), checkpointed, stopped after the second chunk and resumed
    in a new process, against the same 2 seeds vmapped on one device. Every training metric
    and every learned parameter agrees to float rounding; the evaluation's metrics agree
    tightly at step 0 (same parameters), and the world-model error loosely after training.
    The eval return after training is not compared: 20 chaotic physics steps per episode
    turn rounding-size parameter differences into differences larger than the signal
    (measured on this smoke run: actor parameters scaled by 1 + 1e-6 * N(0, 1) move a
    seed's eval return over 0.6, by 1 + 1e-4 over 2.3; docs/RESULTS.md, session 9)."""
    logdir = str(tmp_path / "run")
    first = sharded(tmp_path, "first", "sag", "0,1", logdir, "1")
    assert first["n_devices"] == 2 and first["rows"] is None  # stopped by the test hook
    res = sharded(tmp_path, "resumed", "sag", "0,1", logdir)
    assert res["state_specs"] == ["P('seeds',)"]  # every leaf split over the seeds axis
    assert res["summary"]["resumed_from_env_steps"] > 0
    state, rows, _ = smoke(smoke_runs, guide="sag", seeds=(0, 1))
    check_rows(res["rows"], seeds=(0, 1))
    sharded_params = np.load(tmp_path / "resumed.npz")
    unsharded_params = learned_parameters(state)
    assert sorted(sharded_params.files) == sorted(unsharded_params)
    for k, v in unsharded_params.items():
        np.testing.assert_allclose(sharded_params[k], v, rtol=PARAM_RTOL, atol=PARAM_ATOL, err_msg=k)
    assert len(res["rows"]) == len(rows)
    for a, b in zip(res["rows"], rows):
        assert a.keys() == b.keys() and (a["seed"], a["env_steps"]) == (b["seed"], b["env_steps"])
        for k in a:
            if k in EVAL_METRICS:
                if a["env_steps"] == 0:
                    np.testing.assert_allclose(a[k], b[k], err_msg=k, rtol=1e-3, atol=1e-3)
                elif k != "eval_return":
                    np.testing.assert_allclose(a[k], b[k], err_msg=k, rtol=0.1, atol=0.5)
            elif k != "env_steps_per_s":
                np.testing.assert_allclose(a[k], b[k], rtol=2e-3, atol=1e-4, err_msg=k)


def test_seeds_must_split_evenly_over_devices():
    import jax
    with pytest.raises(ValueError, match="num_seeds=3 cannot be split evenly over the 2 devices"):
        loop.seed_sharding(3, [jax.devices()[0]] * 2)
    assert loop.seed_sharding(3, jax.devices()[:1]) is None  # one device: the plain program
