"""Shared test set-up: JAX's persistent compilation cache, so compiled programs are reused
across tests and CI runs (MJX/Brax programs take many seconds to compile on a CPU), and a
release of each test file's compiled programs when the file is done, so a worker's memory
does not grow with every file it runs (two workers share the CI machine's memory)."""
import gc
import os

# Set before JAX starts its CPU client, and inherited by the tests' subprocesses: LLVM's -O0
# code generation. The suite compiles many programs and runs each for seconds; -O0 compiles
# them about a quarter faster (measured: two smoke-run tests 216 s -> 167 s, cold cache) and
# computes the same functions (only the rounding of vectorised reductions may differ).
_O0 = "--xla_backend_optimization_level=0"
if _O0 not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_O0}".strip()

import agdjax  # noqa: F401  (CPU linear algebra without LAPACK calls: agdjax/cpu_linalg.py)
import jax
import pytest

_CACHE = os.environ.get("AGDJAX_JAX_CACHE", os.path.expanduser("~/.cache/agdjax-jax"))
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def pytest_configure(config):
    import childproc
    childproc.keep_stderr()


@pytest.fixture(scope="session")
def smoke_runs():
    """Cache of finished smoke runs shared by tests: key -> (state, rows, summary)."""
    return {}


@pytest.fixture(scope="module", autouse=True)
def _release_compiled_programs(request, smoke_runs):
    """After each test file: drop the smoke runs cached so far, the driver's compiled
    programs (`loop._compiled`), the module's own lru-cached programs and JAX's in-memory
    caches. A later file recompiles from the persistent cache in seconds."""
    yield
    from agdjax import loop
    smoke_runs.clear()
    loop._compiled_program.cache_clear()
    for value in vars(request.module).values():
        if hasattr(value, "cache_clear"):
            value.cache_clear()
    jax.clear_caches()
    gc.collect()
