"""Cholesky and triangular solves on the CPU as XLA's own HLO ops, not LAPACK calls.

Why: MJX factorises the mass matrix twice per step (`cho_factor` in smooth.py and in the
Euler-damping update of forward.py) and solves with it (`cho_solve`). jax 0.10 lowers
these, on the CPU, to LAPACK custom calls (`lapack_spotrf_ffi`, `lapack_strsm_ffi`) that
split their batch over XLA's intra-op thread pool (`jax::ParallelBatchMap`) and wait on it
from a thread of that same pool. When two such calls run at once on a 2-thread pool, both
threads wait for work only they could do, and the program never finishes: seen here three
times in a row on a 1024-trajectory MJX rollout (gdb: both `tf_XLAEigen` threads in
`BlockingCounter::Wait` under `CholeskyFactorization::Kernel`, every other thread idle,
the main thread in `BlockUntilReady`). XLA:CPU expands the generic `cholesky` and
`triangular_solve` HLO ops into plain loops that never re-enter the pool.

Cost, measured here (100 MJX HalfCheetah steps of 64 envs): 6.0 s against 5.5 s with LAPACK,
side by side on a busy machine; the first step's observations agree to 1.5e-5.
Only the CPU lowering changes; GPU and TPU keep theirs. The rules are jax internals, so a
jax without them leaves the lowering as it is and says so with a warning.
"""
from __future__ import annotations

import warnings


def use_xla_linalg_on_cpu() -> bool:
    """Registers the generic HLO lowering of `cholesky` and `triangular_solve` for the
    CPU platform. Returns True when done, False (with a warning) when this jax version
    lacks the internals it needs. Idempotent; must run before the programs are traced."""
    try:
        from jax._src.interpreters import mlir
        from jax._src.lax import linalg
        rules = ((linalg.cholesky_p, linalg._cholesky_lowering),
                 (linalg.triangular_solve_p, linalg._triangular_solve_lowering))
    except (ImportError, AttributeError) as e:  # a jax whose internals moved
        warnings.warn(f"agdjax: could not route CPU Cholesky/triangular solves to XLA ({e}); "
                      f"MJX programs may deadlock in LAPACK on small CPUs")
        return False
    for prim, rule in rules:
        mlir.register_lowering(prim, rule, platform="cpu")
    return True
