"""Shared absl entry point: `python -m experiments.<task> [--flags]`.

Flags only choose; every default lives in the preset (agdjax/config.py). Every bad value
stops with a one-line error naming the flag and what is allowed (exit status 2).
"""
from __future__ import annotations

import os
import sys
import time

from absl import app, flags

from agdjax import config as C

FLAGS = flags.FLAGS
flags.DEFINE_string("guide", "none", f"state guide: {', '.join(C.GUIDES)}")
flags.DEFINE_string("agent", "a2c", f"imagination learner: {', '.join(C.AGENTS)}")
flags.DEFINE_bool("model_free", False, "train the learner on the real environment (no world model)")
flags.DEFINE_integer("num_seeds", 1, "number of seeds run together (vmapped)")
flags.DEFINE_integer("seed", 0, "first seed; seeds are seed … seed+num_seeds-1")
flags.DEFINE_integer("total_env_steps", None, "env-step budget per seed (default: the preset's)")
flags.DEFINE_string("backend", "mjx", f"Brax backend: {', '.join(C.BACKENDS)}")
flags.DEFINE_string("preset", "auto", f"{', '.join(C.PRESETS)}; auto = paper on GPU/TPU, cpu on CPU")
flags.DEFINE_float("guide_scale", None, "state-guide scale c (default: sag 4, eag 3, reward 1)")
flags.DEFINE_string("logdir", None, "run directory (default: runs/<task>_<guide>_<preset>_<time>)")
flags.DEFINE_bool("progress", True, "show a progress bar")


def fail(msg: str):
    """One line on stderr, exit status 2, no traceback."""
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def build_config(task: str, platform: str) -> C.Config:
    preset = FLAGS.preset
    if preset not in C.PRESETS:
        fail(f"--preset={preset!r} is not allowed; choose one of {', '.join(C.PRESETS)}")
    preset = C.resolve_preset(preset, platform)
    if FLAGS.num_seeds <= 0:
        fail(f"--num_seeds={FLAGS.num_seeds} must be a positive integer")
    if FLAGS.seed < 0:
        fail(f"--seed={FLAGS.seed} must be >= 0")
    try:
        return C.make_config(task, preset, guide=FLAGS.guide, agent=FLAGS.agent,
                             model_free=FLAGS.model_free, backend=FLAGS.backend,
                             total_env_steps=FLAGS.total_env_steps, guide_scale=FLAGS.guide_scale)
    except C.ConfigError as e:
        fail(str(e))


def main_for(task: str):
    def main(argv):
        if len(argv) > 1:
            fail(f"unexpected arguments {argv[1:]}; flags are --name=value")
        import jax
        platform = jax.default_backend()
        cfg = build_config(task, platform)
        if cfg.agent != "a2c" or cfg.model_free:
            fail(f"--agent={cfg.agent} / --model_free are not implemented yet; use --agent=a2c")
        logdir = FLAGS.logdir or os.path.join(
            "runs", f"{task}_{cfg.guide}_{cfg.preset}_{time.strftime('%Y%m%d-%H%M%S')}")
        if os.path.exists(os.path.join(logdir, "metrics.jsonl")):
            fail(f"--logdir={logdir} already holds a run; choose a new directory")
        try:
            os.makedirs(logdir, exist_ok=True)
            probe = os.path.join(logdir, ".write_test")
            open(probe, "w").close()
            os.remove(probe)
        except OSError as e:
            fail(f"--logdir={logdir} is not writable ({e.strerror})")
        seeds = list(range(FLAGS.seed, FLAGS.seed + FLAGS.num_seeds))
        print(f"agdjax: preset={cfg.preset} device={platform} ({jax.devices()[0].device_kind}) "
              f"task={task} backend={cfg.backend} guide={cfg.guide} agent={cfg.agent} "
              f"seeds={seeds} total_env_steps={cfg.total_env_steps} logdir={logdir}", flush=True)
        from agdjax import loop
        _, _, summary = loop.run(cfg, seeds, logdir, progress=FLAGS.progress)
        print(f"done: final eval return {summary.get('final_eval_return_mean', float('nan')):.1f} "
              f"± {summary.get('final_eval_return_std', float('nan')):.1f} at "
              f"{summary.get('final_env_steps')} env steps; compile {summary['compile_s']:.0f}s, "
              f"train {summary['train_s']:.0f}s; run directory {logdir}", flush=True)

    app.run(main)
