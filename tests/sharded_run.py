"""Run by tests/test_sharding.py in a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=N:
a smoke run whose seeds are sharded over the N host devices. Writes {"n_devices", "rows",
"summary"} as JSON to argv[1], and the final learned parameters (`learned_parameters`) to
argv[1] with .npz for .json. Argv: out.json guide seeds(comma) [logdir] [stop_after_chunk]."""
import json
import os
import sys

import jax
import numpy as np

jax.config.update("jax_compilation_cache_dir",
                  os.environ.get("AGDJAX_JAX_CACHE", os.path.expanduser("~/.cache/agdjax-jax")))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

from agdjax import loop  # noqa: E402
from agdjax.config import make_config  # noqa: E402


def learned_parameters(state):
    """{path: array} of the actor's, critic's and denoiser's parameters of a TrainState."""
    parts = {"actor": state.agent.actor, "critic": state.agent.critic, "denoiser": state.denoiser}
    return {jax.tree_util.keystr(k, simple=True, separator="."): np.asarray(v)
            for k, v in jax.tree_util.tree_leaves_with_path(parts)}


def main(out, guide, seeds, logdir=None, stop_after=None):
    cfg = make_config("halfcheetah", "smoke", guide=guide, backend="positional")
    seeds = [int(s) for s in seeds.split(",")]
    kw = dict(checkpoint_every=32, resume=os.path.exists(os.path.join(logdir, "config.json"))) if logdir else {}
    try:
        state, rows, summary = loop.run(cfg, seeds, logdir or None, progress=False,
                                        _stop_after_chunk=None if stop_after is None else int(stop_after), **kw)
    except loop._Interrupted:
        rows, summary, state = None, None, None
    shardings = sorted({str(x.sharding.spec) for x in jax.tree.leaves(state)}) if state is not None else []
    if state is not None:
        np.savez(out[:-len(".json")] + ".npz", **learned_parameters(state))
    with open(out, "w") as f:
        json.dump({"n_devices": jax.device_count(), "rows": rows, "summary": summary,
                   "state_specs": shardings}, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
