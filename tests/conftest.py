"""Shared test set-up: JAX's persistent compilation cache, so compiled programs are reused
across tests and CI runs (MJX/Brax programs take many seconds to compile on a CPU)."""
import os

import jax
import pytest

_CACHE = os.environ.get("AGDJAX_JAX_CACHE", os.path.expanduser("~/.cache/agdjax-jax"))
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


@pytest.fixture(scope="session")
def smoke_runs():
    """Cache of finished smoke runs shared by tests: key -> (state, rows, summary)."""
    return {}
