"""`python -m benchmarks.throughput --quick` runs and its JSON has every measure of the
throughput issue (values positive and finite; the speed targets themselves are benchmarks,
not tests). Its end-to-end programs are the smoke runs of test_train, so the persistent
compilation cache serves whichever runs second."""
import json
import math
import os
import sys

from agdjax.config import GUIDES
import childproc  # tests/childproc.py: a child's crash is rerun like a worker's

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def positive(x):
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_quick_benchmark_writes_every_field(tmp_path):
    out = tmp_path / "quick.json"
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               JAX_COMPILATION_CACHE_DIR=os.environ.get("AGDJAX_JAX_CACHE", os.path.expanduser("~/.cache/agdjax-jax")),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5")
    p = childproc.run([sys.executable, "-m", "benchmarks.throughput", "--quick", f"--out={out}"], cwd=ROOT,
                      env=env, capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "| denoiser training windows/s |" in p.stdout  # the markdown table
    r = json.loads(out.read_text())
    assert r["quick"] and r["platform"] == "cpu" and r["n_devices"] >= 1
    # raw env steps/s for several n_envs, and the collection phase against it
    assert len(r["raw_env"]) >= 2
    for v in r["raw_env"].values():
        assert positive(v["steps_per_s"]) and positive(v["compile_s"])
    c = r["collection"]
    assert positive(c["steps_per_s"]) and positive(c["compile_s"])
    assert math.isclose(c["ratio_to_raw"], c["steps_per_s"] / r["raw_env"][str(c["n_envs"])]["steps_per_s"])
    assert positive(c["steps_per_s_seed_vmap"]) and positive(c["ratio_to_raw_seed_vmap"])
    # imagined transitions/s and cost relative to `none` for every guide
    for g in GUIDES:
        v = r["imagination"][g]
        assert positive(v["transitions_per_s"]) and positive(v["compile_s"]) and positive(v["cost_vs_none"])
    assert r["imagination"]["none"]["cost_vs_none"] == 1.0
    # denoiser training windows/s; FLOP/s against the matmul peak measured in the same run
    d = r["denoiser_training"]
    assert positive(d["windows_per_s"]) and positive(d["compile_s"]) and positive(d["flops_per_s"])
    assert positive(d["windows_per_s_seed_vmap"])
    pk = r["matmul_peak_flops_per_s"]
    assert positive(pk["float32"]) and positive(pk["bfloat16"])
    assert math.isclose(d["fraction_of_peak"], d["flops_per_s"] / pk["float32"])
    sag = r["imagination"]["sag"]
    assert positive(sag["flops_per_s"]) and 0 < sag["fraction_of_peak"] < 1.5
    # end-to-end env steps/s and imagined transitions/s per seed count, scaling efficiency,
    # compile time apart, and no compile after the first chunk
    assert set(r["seeds"]) == {"1", "2"}
    for v in r["seeds"].values():
        for k in ("env_steps_per_s", "imagined_transitions_per_s", "scaling_efficiency", "compile_s"):
            assert positive(v[k]), k
        assert v["compiles_after_first_chunk"] == 0
    assert r["seeds"]["1"]["scaling_efficiency"] == 1.0
