"""Tiny end-to-end runs (smoke preset): every guide on one task, every task with one guide,
the default MJX backend, vmapped seed i == seed i alone, and the run directory."""
import json
import math
import os

import numpy as np
import pytest

from agdjax import loop
from agdjax.config import make_config

FAST = "positional"  # the Brax backend that compiles fastest on a CPU
REQUIRED = ("seed", "env_steps", "diffusion_loss", "actor_loss", "critic_loss", "imagined_advantage",
            "action_guidance_scale", "env_steps_per_s")


def smoke(cache, task="halfcheetah", guide="sag", backend=FAST, seeds=(0,), logdir=None):
    key = (task, guide, backend, tuple(seeds))
    if key not in cache:
        cfg = make_config(task, "smoke", guide=guide, backend=backend)
        cache[key] = loop.run(cfg, list(seeds), logdir, progress=False)
    return cache[key]


def check_rows(rows, cfg_total=64, seeds=(0,)):
    assert {r["seed"] for r in rows} == set(seeds)
    evals = sorted({r["env_steps"] for r in rows if "eval_return" in r})
    assert evals == [0, 32, 64]
    last = [r for r in rows if r["env_steps"] == cfg_total]
    assert len(last) == len(seeds)
    for r in last:
        for k in REQUIRED:
            assert k in r, k
            assert math.isfinite(r[k]), (k, r[k])


@pytest.mark.parametrize("guide", ["none", "sag", "eag", "reward"])
def test_smoke_every_guide(smoke_runs, guide):
    state, rows, summary = smoke(smoke_runs, guide=guide)
    check_rows(rows)
    assert math.isfinite(summary["final_eval_return_mean"])
    if guide == "reward":
        assert any(math.isfinite(r.get("reward_model_loss", float("nan"))) for r in rows)


@pytest.mark.parametrize("task", ["hopper", "walker2d", "reacher"])
def test_smoke_every_task(smoke_runs, task):
    _, rows, _ = smoke(smoke_runs, task=task)
    check_rows(rows)


def test_smoke_default_mjx_backend(smoke_runs):
    _, rows, _ = smoke(smoke_runs, guide="sag", backend="mjx")
    check_rows(rows)


def test_vmapped_seed_equals_seed_alone(smoke_runs):
    _, rows_pair, _ = smoke(smoke_runs, guide="sag", seeds=(0, 1))
    _, rows_alone, _ = smoke(smoke_runs, guide="sag", seeds=(1,))
    check_rows(rows_pair, seeds=(0, 1))
    pick = lambda rows: [r for r in rows if r["seed"] == 1]
    a, b = pick(rows_pair), pick(rows_alone)
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        for k in ra:
            if k in ("env_steps_per_s",):
                continue
            np.testing.assert_allclose(ra[k], rb[k], rtol=2e-4, atol=1e-5, err_msg=k)
    # and the two seeds really differ
    r0 = [r for r in rows_pair if r["seed"] == 0][-1]
    assert r0["diffusion_loss"] != a[-1]["diffusion_loss"]


def test_run_directory(smoke_runs, tmp_path):
    _, rows, summary = smoke(smoke_runs, guide="none", seeds=(3,), logdir=str(tmp_path))
    files = set(os.listdir(tmp_path))
    assert {"config.json", "metrics.jsonl", "summary.json", "curve.png", "tb"} <= files
    cfg = json.load(open(tmp_path / "config.json"))
    assert cfg["config"]["guide"] == "none" and cfg["seeds"] == [3]
    written = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert written == rows
    assert json.load(open(tmp_path / "summary.json"))["final_env_steps"] == 64
