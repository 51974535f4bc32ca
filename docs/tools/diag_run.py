"""Diagnostic driver: python exp.py LOGDIR SEEDS key=value ... (config overrides on the cpu preset)."""
import os, sys, ast
import agdjax, jax
jax.config.update("jax_compilation_cache_dir", os.path.expanduser("~/.cache/agdjax-jax"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
from agdjax import loop
from agdjax.config import make_config
logdir, seeds = sys.argv[1], [int(x) for x in sys.argv[2].split(",")]
kw = {}
for a in sys.argv[3:]:
    k, v = a.split("=", 1)
    try: v = ast.literal_eval(v)
    except Exception: pass
    kw[k] = v
preset = kw.pop("preset", "cpu")
cfg = make_config(kw.pop("task", "halfcheetah"), preset, **kw)
print(cfg, flush=True)
loop.run(cfg, seeds, logdir, progress=False, checkpoint_every=10000)
