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

# The learned parameters are compared per network (actor, critic, denoiser: all its leaves as
# one vector), |sharded - unsharded| / |unsharded|. The two programs round differently and
# training grows that (Adam divides by sqrt(v); the collected data follow chaotic physics).
# Measured (mujoco 4.0.1): kernels 2e-7..1.4e-4 apart as leaves, while a bias that has moved
# little from its zero init is up to 5e-3 of its own norm off (one step of Adam on a
# near-zero gradient goes either way), so leaves are not compared one by one. Rounding a
# network's weights to bfloat16 is about 1.7e-3 off (random weights, test below); a resume that lost the optimiser state
# or mixed up the seeds is off by far more.
PARAM_REL_NORM = 5e-4


def network_errors(actual: dict, desired: dict) -> dict:
    """{network: |actual - desired| / |desired|} over all leaves of each network (the part of
    the leaf name before the first '.'), Frobenius norms."""
    num, den = {}, {}
    for k, v in desired.items():
        net = k.split(".")[0]
        num[net] = num.get(net, 0.0) + float(np.sum((actual[k].astype(np.float64) - v) ** 2))
        den[net] = den.get(net, 0.0) + float(np.sum(v.astype(np.float64) ** 2))
    return {net: float(np.sqrt(num[net] / max(den[net], 1e-24))) for net in num}


def assert_networks_close(actual: dict, desired: dict):
    errs = network_errors(actual, desired)
    assert max(errs.values()) <= PARAM_REL_NORM, f"relative norm difference above {PARAM_REL_NORM:g}: {errs}"


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
    (but the two statistics of the 8 imagined trajectories, to 2%) and each network's learned
    parameters (relative norm) agree to float rounding; the evaluation's metrics agree
    tightly at step 0 (same parameters; the eval return to 1%: the two programs compile the
    physics differently, measured 0.33% apart after the action clip moved into envs.sim_step),
    and the world-model error loosely after training.
    The eval return after training is not compared: 20 chaotic physics steps per episode
    turn rounding-size parameter differences into differences larger than the signal
    (measured on this smoke run: actor parameters scaled by 1 + 1e-6 * N(0, 1) move a
    seed's eval return over 0.6, by 1 + 1e-4 over 2.3)."""
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
    print("relative norm difference per network:", network_errors(sharded_params, unsharded_params))
    assert_networks_close(sharded_params, unsharded_params)
    assert len(res["rows"]) == len(rows)
    off = []  # every metric outside its bound: (metric, seed, env steps, sharded, unsharded)
    for a, b in zip(res["rows"], rows):
        assert a.keys() == b.keys() and (a["seed"], a["env_steps"]) == (b["seed"], b["env_steps"])
        for k in a:
            if k in EVAL_METRICS:
                if a["env_steps"] == 0:  # eval_return: 20 chaotic steps of two compiles' rounding
                    rtol, atol = (1e-2 if k in ("eval_return", "eval_return_sampled") else 1e-3), 1e-3  # (3.3e-3 apart, 2026-12-04)
                elif k not in ("eval_return", "eval_return_sampled"):
                    rtol, atol = 0.1, 0.5
                else:
                    continue
            elif k in ("critic_explained_variance", "imagined_advantage"):
                rtol, atol = 2e-2, 1e-4  # statistics of 8 imagined trajectories: 0.9% apart at step 48 (2026-12-04)
            elif k != "env_steps_per_s":
                rtol, atol = 2e-3, 1e-4
            else:
                continue
            if not np.isclose(a[k], b[k], rtol=rtol, atol=atol, equal_nan=True):
                off.append((k, a["seed"], a["env_steps"], a[k], b[k]))
    assert not off, off


def test_parameter_check_rejects_bf16_rounding():
    """The parameter check above can fail: parameters rounded to bfloat16 are refused, ones
    that differ by float32 rounding are not, and the networks are told apart."""
    import jax.numpy as jnp
    rng = np.random.default_rng(0)
    p = {"actor.w": rng.normal(0, 0.05, (64, 32)).astype(np.float32),
         "denoiser.w": rng.normal(0, 0.05, (64, 32)).astype(np.float32),
         "denoiser.b": np.full(32, 1e-3, np.float32)}
    assert_networks_close({k: v * (1 + np.float32(1e-6)) for k, v in p.items()}, p)
    bf16 = dict(p, **{"denoiser.w": np.asarray(jnp.asarray(p["denoiser.w"], jnp.bfloat16), np.float32)})
    assert network_errors(bf16, p)["actor"] == 0.0
    with pytest.raises(AssertionError, match="relative norm difference above"):
        assert_networks_close(bf16, p)


def test_seeds_must_split_evenly_over_devices():
    import jax
    with pytest.raises(ValueError, match="num_seeds=3 cannot be split evenly over the 2 devices"):
        loop.seed_sharding(3, [jax.devices()[0]] * 2)
    assert loop.seed_sharding(3, jax.devices()[:1]) is None  # one device: the plain program
