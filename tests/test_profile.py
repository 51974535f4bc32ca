"""benchmarks/profile.py: the part-by-part accounting (known answers on cheap functions) and
its bad-input checks. The profile itself is a benchmark (docs/RESULTS.md), not a test."""
import os
import sys

import jax.numpy as jnp
import pytest

import childproc  # tests/childproc.py: a child's crash is rerun like a worker's
from benchmarks import profile


def test_measure_accounts_for_every_part():
    """rest = whole - the parts not contained in another one; shares are s / whole."""
    x = jnp.ones((64, 64))
    parts = {"a": lambda x: x @ x, "b": lambda x: jnp.tanh(x), "a inside": lambda x: x + 1.0,
             "whole": lambda x: jnp.tanh(x @ x) + 1.0}
    res = profile._measure(parts, (x,), repeats=2, peak=1e9, inside=("a inside",))
    assert set(res) == {"a", "b", "a inside", "whole", "rest"}
    assert res["rest"]["s"] == pytest.approx(res["whole"]["s"] - res["a"]["s"] - res["b"]["s"])
    for v in res.values():
        assert v["share"] == pytest.approx(v["s"] / res["whole"]["s"])
    assert res["whole"]["share"] == 1.0
    assert res["a"]["gflop_per_s"] > 0  # a matmul: XLA counts its 2 n^3 FLOPs


def test_reverse_step_parts_are_the_whole_step():
    """Every part does real work (nothing folded at compile time), and the parts' FLOPs add up
    to the whole step's within 15% (the rest is noise, the clamp, in-painting)."""
    from agdjax.config import make_config
    cfg = make_config("halfcheetah", "smoke", guide="sag", backend="positional")
    res = profile.reverse_step_parts(cfg, "sag", repeats=1, peak=1e9)
    flops = {k: v["gflop_per_s"] * v["s"] for k, v in res.items() if "gflop_per_s" in v}
    assert all(f > 0 for f in flops.values()), flops
    parts = sum(f for k, f in flops.items() if k != "whole")
    assert 0.85 * flops["whole"] <= parts <= 1.15 * flops["whole"], flops


@pytest.mark.parametrize("argv,says", [(["--preset=huge"], "--preset='huge'"), (["--guide=reward"], "--guide='reward'"),
                                       (["--repeats=0"], "--repeats=0"), (["--repeats=x"], "--repeats"),
                                       (["--run_dir=/nonexistent"], "no config.json")])
def test_bad_input_one_line_exit_2(argv, says, capsys):
    assert profile.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err


def test_profile_runs_beside_an_entry_point_flags():
    """The profile's timing helpers define no absl flags, so it runs in a process that has
    already imported an entry point's (experiments.common defines --task, as
    benchmarks.throughput does): one pytest worker runs both test files. A fresh process
    makes the import order certain."""
    code = ("import experiments.common, jax.numpy as jnp; from benchmarks import profile; "
            "r = profile._measure({'whole': lambda x: x @ x}, (jnp.ones((8, 8)),), 1, 1e9); print(sorted(r))")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = childproc.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1:] == ["['rest', 'whole']"]
