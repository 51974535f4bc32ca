"""What the benchmarks share to time and count: the best run time of a compiled function, its
FLOPs from XLA's cost analysis, and the measured matmul peak. No flags are defined here, so
any benchmark or test may import it beside an entry point that defines its own."""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp


def timed(fn, *args, repeats=3):
    """(compile_s, best run_s, compiled) of jit(fn)(*args): compiled ahead of time, one
    warm-up call, then the best of `repeats` calls (seconds)."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(*args))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        best = min(best, time.perf_counter() - t0)
    return compile_s, best, compiled


def flops_of(compiled):
    """FLOPs of one call of `compiled` (XLA's cost analysis; NaN where the backend has none)."""
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return float(cost.get("flops", float("nan")))
    except Exception:  # cost analysis is best effort on some backends
        return float("nan")


def matmul_peak(dtype, n):
    """FLOP/s of an n x n matmul with `dtype` operands and float32 accumulation (the way the
    denoiser multiplies, see agdjax.networks.dot_accumulate_f32)."""
    a = jnp.ones((n, n), dtype)
    _, t, _ = timed(lambda x: jax.lax.dot(x, x, preferred_element_type=jnp.float32), a, repeats=5)
    return 2 * n**3 / t
