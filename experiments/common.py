"""Shared absl entry point: `python -m experiments.<task> [--flags]` (or
`python -m experiments --task=<task> [--flags]`).

Flags only choose; every default lives in the preset (agdjax/config.py). Every flag is
checked before anything is compiled: a bad value stops with one line on stderr naming the
flag, the value and what is allowed (exit status 2, no traceback), and nothing already in the
run directory is touched.

`--resume` continues the run in `--logdir` from its newest valid checkpoint, to
`--total_env_steps` (default: the run's). Flags not given on the command line take the run's
values; flags given must match the run (only --total_env_steps may grow).
"""
from __future__ import annotations

import math
import os
import sys
import time

from absl import app, flags

from agdjax import config as C

FLAGS = flags.FLAGS
flags.DEFINE_string("task", None, f"task: {', '.join(C.TASKS)} (default: the entry point's)")
flags.DEFINE_string("guide", "none", f"state guide: {', '.join(C.GUIDES)}")
flags.DEFINE_string("agent", "a2c", f"imagination learner: {', '.join(C.AGENTS)}")
flags.DEFINE_string("imagination", "diffusion", f"{', '.join(C.IMAGINATION)}: what the learner trains on; "
                    "oracle (a diagnostic) = H-step rollouts of the current policy in the real simulator")
flags.DEFINE_bool("model_free", False, "train the learner on the real environment (no world model)")
flags.DEFINE_integer("num_seeds", 1, "number of seeds run together (vmapped)")
flags.DEFINE_integer("seed", 0, "first seed; seeds are seed … seed+num_seeds-1")
flags.DEFINE_integer("total_env_steps", None, "env-step budget per seed (default: the preset's)")
flags.DEFINE_string("backend", "mjx", f"Brax backend: {', '.join(C.BACKENDS)}")
flags.DEFINE_string("preset", "auto", f"{', '.join(C.PRESETS)}; auto = paper on GPU/TPU, cpu on CPU")
# The SWEEPABLE settings (agdjax/config.py) take one value or a comma-separated list: a list
# runs every value with every seed as members of one compiled program (a sweep).
_SWEEP_HELP = {
    "guide_scale": "state-guide scale c (default: per task, halfcheetah sag 3, hopper eag 4; else sag 4, "
                   "eag 3, reward 1)",
    "actor_lr_max": "cap of the adaptive actor learning rate (default: the preset's)",
    "delta_ref": "initial action-guidance scale at 128 diffusion steps; delta_init = delta_ref * 128 / K, "
                 "K the sampling steps (default: the preset's)",
    "diffusion_lr": "Adam learning rate of the denoiser (and reward model) (default: the preset's)",
}
for _name in C.SWEEPABLE:
    flags.DEFINE_string(_name, None, f"{_SWEEP_HELP.get(_name, _name)}; a comma-separated list "
                        f"(e.g. 0,1,3) sweeps it: every value runs with every seed, in one program")
flags.DEFINE_integer("iters_per_chunk", None, "iterations per compiled chunk: one progress line, metrics "
                     "flush and checkpoint step (default: the preset's; paper 10, cpu 5)")
flags.DEFINE_float("diffusion_steps_per_env_step", None, "denoiser updates per env step; times "
                   "n_envs*steps_per_iter must be a whole number (default: the preset's; paper 1.0, "
                   "cpu 2.0)")
flags.DEFINE_string("logdir", None, "run directory (default: runs/<task>_<guide>_<preset>_<time>)")
flags.DEFINE_integer("checkpoint_every", None,
                     "env steps between Orbax checkpoints, rounded to whole chunks (default: the "
                     "preset's eval_every)")
flags.DEFINE_bool("resume", False, "continue the run in --logdir from its newest valid checkpoint, "
                                   "to --total_env_steps")
flags.DEFINE_bool("progress", True, "show progress: a bar on a terminal; when stdout is not a "
                  "terminal, a plain line every --progress_every_s seconds (at most one per chunk)")
flags.DEFINE_float("progress_every_s", 30.0, "seconds between plain progress lines when stdout is "
                   "not a terminal")
flags.DEFINE_enum("log_level", "warning", ["warning", "info", "debug"],
                  "console logging of Orbax, absl and other libraries (warnings and errors always "
                  "show; info brings back Orbax's per-checkpoint lines)")
flags.DEFINE_integer("sampling_steps", None, "reverse diffusion steps of imagination K <= T: the trained "
                     "T-step model sampled on K evenly spaced steps (respacing, Nichol & Dhariwal 2021); "
                     "faster, less faithful (default: T)")
flags.DEFINE_string("denoiser_dtype", None, "matmul dtype of the denoiser and of the guide's networks "
                    "inside the sampler: float32 or bfloat16 (fp32 weights, accumulation and loss; "
                    "default: the preset's, float32)")
flags.DEFINE_bool("scale_action_input", None, "the denoiser sees sqrt(alpha_bar_t) * a (true, the "
                  "reference; paper preset) or a unscaled (false; cpu preset). Default: the preset's")
flags.DEFINE_bool("guide_last_row", None, "ablation: the state guide also moves the last imagined "
                  "state (row H-1), which the reference leaves out (default: false)")
flags.DEFINE_string("env_action", None, f"{', '.join(C.ENV_ACTIONS)}: what the simulator is given: clipped (the "
                  "policy's sample clipped to [-1, 1], the reference's rule: physics and control cost see the "
                  "clipped action) or raw (ablation: the control cost is charged on the raw sample). The "
                  "replay stores the raw sample either way (default: clipped)")
flags.DEFINE_bool("distributed", False, "call jax.distributed.initialize() first: one process per "
                  "host, seeds sharded over every host's devices")
flags.DEFINE_string("coordinator_address", None, "with --distributed: host:port of process 0 (default: "
                    "from the cluster environment or JAX_COORDINATOR_ADDRESS)")
flags.DEFINE_integer("num_processes", None, "with --distributed: number of processes (default: from the "
                     "cluster environment)")
flags.DEFINE_integer("process_id", None, "with --distributed: this process's index (default: from the "
                     "cluster environment)")

# Config fields a flag sets; on --resume the ones not given come from the run's config.json.
_CONFIG_FLAGS = ("guide", "agent", "model_free", "backend", "total_env_steps",
                 "denoiser_dtype", "imagination", "scale_action_input", "guide_last_row", "env_action", "sampling_steps",
                 "iters_per_chunk", "diffusion_steps_per_env_step") + C.SWEEPABLE


def fail(msg: str):
    """One line on stderr, exit status 2, no traceback."""
    print(f"error: {' '.join(str(msg).split())}", file=sys.stderr)
    sys.exit(2)


def _given(name: str) -> bool:
    return FLAGS[name].present > 0


def parse_values(name: str, text: str) -> list:
    """A SWEEPABLE flag's value: one number or a comma-separated list -> [float]; fails with one
    line on anything else."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) for v in values):
        fail(f"--{name}={text!r} is not allowed; give a number or numbers separated by commas, e.g. 0,1,3")
    return values


def _flag_values():
    """{config field: value} of the config flags: a SWEEPABLE flag with one value sets its
    field, with several it sets `sweep` ({name: [values]}); flags not given are None."""
    values = {name: getattr(FLAGS, name) for name in _CONFIG_FLAGS if name not in C.SWEEPABLE}
    sweep = {}
    for name in C.SWEEPABLE:
        text = getattr(FLAGS, name)
        parsed = None if text is None else parse_values(name, text)
        values[name] = parsed[0] if parsed and len(parsed) == 1 else None
        if parsed and len(parsed) > 1:
            sweep[name] = parsed
    return values, sweep


def _saved_run(logdir: str):
    """(config dict, seeds) of the run in `logdir`, for --resume; fails if there is none."""
    import json
    path = os.path.join(logdir, "config.json")
    if not os.path.isfile(path):
        fail(f"--resume: --logdir={logdir} holds no run (no config.json); start it without --resume")
    try:
        with open(path) as f:
            d = json.load(f)
        return d["config"], list(d["seeds"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        fail(f"--resume: --logdir={logdir} has an unreadable config.json ({e})")


def build_config(task: str, platform: str, saved=None) -> C.Config:
    """The run's config from the flags. On --resume, every config value comes from the saved
    run (preset values too, since a preset may have changed after the run started; a field the
    run's config.json predates takes its default, or the value older runs had
    (`config.saved_values`), as the resume checks assume) except the
    flags given now. Fails with a one-line message on any bad value."""
    preset = FLAGS.preset
    if preset not in C.PRESETS:
        fail(f"--preset={preset!r} is not allowed; choose one of {', '.join(C.PRESETS)}")
    if saved is not None and not _given("preset"):
        preset = saved[0].get("preset", preset)
    preset = C.resolve_preset(preset, platform)
    if FLAGS.total_env_steps is not None and FLAGS.total_env_steps <= 0:
        fail(f"--total_env_steps={FLAGS.total_env_steps} must be a positive integer")
    values, sweep = _flag_values()
    values["sweep"] = sweep
    if saved is not None:
        for k, v in C.saved_values(saved[0]).items():
            if k not in ("task", "preset") and not (k in _CONFIG_FLAGS and _given(k)):
                values[k] = v
    try:
        return C.make_config(task, preset, **values)
    except C.ConfigError as e:
        fail(str(e))


def check_resume_flags(saved, platform: str, logdir: str):
    """Fails if a flag given on the command line differs from the saved run's value (before
    the config is built, so the message names that flag)."""
    saved_cfg = saved[0]
    saved_sweep, saved_fields = saved_cfg.get("sweep") or {}, C.saved_values(saved_cfg)
    for name in ("preset",) + _CONFIG_FLAGS:
        if name == "total_env_steps" or not _given(name):
            continue
        value = getattr(FLAGS, name)
        if name == "preset":
            value = C.resolve_preset(value, platform)
        shown = repr(value)
        if name in C.SWEEPABLE:
            parsed = parse_values(name, value)
            shown, value = value, (parsed if len(parsed) > 1 else parsed[0])
            old = saved_sweep.get(name, saved_cfg.get(name))
        else:
            old = saved_fields.get(name, value)
        if old != value:
            fail(f"--resume: --{name}={shown} differs from the run's {old!r} in "
                 f"--logdir={logdir}; only --total_env_steps may change when resuming")


def check_resume(cfg: C.Config, seeds, saved, logdir: str):
    """Fails unless the saved run (config, seeds) can continue as (cfg, seeds)."""
    saved_cfg, saved_seeds = saved
    if list(saved_seeds) != list(seeds):
        fail(f"--seed/--num_seeds give seeds {list(seeds)} but the run in --logdir={logdir} has seeds "
             f"{list(saved_seeds)}; they must match to --resume")
    new, old = cfg.to_dict(), C.saved_values(saved_cfg)
    flag_fields = ("task", "preset") + _CONFIG_FLAGS
    others = [k for k in new if k not in flag_fields]
    for k in flag_fields + tuple(others):
        if k == "total_env_steps":
            continue
        if old[k] != new[k]:
            what = f"--{k}={new[k]!r}" if k in flag_fields else f"config field {k}={new[k]!r}"
            fail(f"--resume: {what} differs from the run's {old[k]!r} in "
                 f"--logdir={logdir}; only --total_env_steps may change when resuming")
    old_total = saved_cfg.get("total_env_steps", 0)
    if cfg.total_env_steps < old_total:
        fail(f"--total_env_steps={cfg.total_env_steps} is less than the run's {old_total} in "
             f"--logdir={logdir}; --resume can only continue to a budget >= {old_total}")


def check_logdir_writable(logdir: str):
    """Creates `logdir` if needed and checks that files can be written in it."""
    try:
        os.makedirs(logdir, exist_ok=True)
        probe = os.path.join(logdir, f".write_test_{os.getpid()}")
        open(probe, "w").close()
        os.remove(probe)
    except OSError as e:
        fail(f"--logdir={logdir} is not writable ({e.strerror or e}); choose a directory you can write")


def _holds_run(logdir: str) -> bool:
    if os.path.exists(os.path.join(logdir, "metrics.jsonl")):
        return True
    ck = os.path.join(logdir, "checkpoints")
    return os.path.isdir(ck) and bool(os.listdir(ck))


def _backend() -> str:
    """jax.default_backend(), without the INFO lines about backends that are not there."""
    import logging
    import jax
    log = logging.getLogger("jax._src.xla_bridge")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        return jax.default_backend()
    finally:
        log.setLevel(level)


def _parse_flags(argv):
    """absl flag parsing with one-line errors (exit 2) instead of absl's usage dump; --help
    (absl exits with status 1 after printing it) exits with status 0."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        fail(f"{e}; see --helpfull for the flags")
    except SystemExit as e:
        if e.code == 1 and any(a.split("=")[0] in ("--help", "-help", "-h", "-?", "--helpfull", "--helpshort")
                               for a in argv[1:]):
            sys.exit(0)
        raise


def _sweep_text(cfg: C.Config, n_members: int) -> str:
    """' sweep guide_scale=0,3 (4 members)' for a sweep, '' otherwise."""
    if not cfg.sweep:
        return ""
    return " sweep " + " ".join(f"{k}={','.join(f'{v:g}' for v in vs)}" for k, vs in cfg.sweep) + \
        f" ({n_members} members)"


def main_for(task: str | None):
    def main(argv):
        if len(argv) > 1:
            fail(f"unexpected arguments {argv[1:]}; flags are --name=value")
        chosen = task
        if FLAGS.task is not None:
            if FLAGS.task not in C.TASKS:
                fail(f"--task={FLAGS.task!r} is not allowed; choose one of {', '.join(C.TASKS)}")
            if task is not None and FLAGS.task != task:
                fail(f"--task={FLAGS.task!r}: this entry point runs {task}; use "
                     f"python -m experiments.{FLAGS.task}")
            chosen = FLAGS.task
        if chosen is None:
            fail(f"--task is required; choose one of {', '.join(C.TASKS)}")
        for name in ("num_seeds", "checkpoint_every"):
            v = getattr(FLAGS, name)
            if v is not None and v <= 0:
                fail(f"--{name}={v} must be a positive integer")
        if FLAGS.seed < 0:
            fail(f"--seed={FLAGS.seed} must be >= 0")
        if not FLAGS.progress_every_s >= 0:
            fail(f"--progress_every_s={FLAGS.progress_every_s} must be >= 0")
        saved = None
        if FLAGS.resume:
            if not FLAGS.logdir:
                fail("--resume needs --logdir=<the run directory to continue>")
            saved = _saved_run(FLAGS.logdir)

        if FLAGS.distributed:
            import jax
            try:
                jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
            except (RuntimeError, ValueError) as e:
                fail(f"--distributed: jax.distributed.initialize() failed ({e})")
        elif any(_given(n) for n in ("coordinator_address", "num_processes", "process_id")):
            fail("--coordinator_address, --num_processes and --process_id need --distributed")
        platform = _backend()
        import jax
        if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):  # reuse compiled programs across runs
            jax.config.update("jax_compilation_cache_dir", os.environ.get(
                "AGDJAX_JAX_CACHE", os.path.expanduser("~/.cache/agdjax-jax")))
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
        if saved is not None:
            check_resume_flags(saved, platform, FLAGS.logdir)
        cfg = build_config(chosen, platform, saved)
        if saved is not None and not (_given("seed") or _given("num_seeds")):
            seeds = list(saved[1])
        else:
            seeds = list(range(FLAGS.seed, FLAGS.seed + FLAGS.num_seeds))
        n_dev = jax.device_count()  # every host's, with --distributed
        n_members = len(C.members(cfg, seeds))
        if n_members % n_dev:
            what = f"the {n_members} members (seeds x swept values)" if cfg.sweep else f"--num_seeds={n_members}"
            fail(f"{what} cannot be split evenly over the {n_dev} devices; use a multiple of {n_dev}")
        checkpoint_every = FLAGS.checkpoint_every or cfg.eval_every

        logdir = FLAGS.logdir or os.path.join(
            "runs", f"{chosen}_{cfg.guide}_{cfg.preset}_{time.strftime('%Y%m%d-%H%M%S')}")
        if saved is not None:
            check_resume(cfg, seeds, saved, logdir)
        elif _holds_run(logdir):
            fail(f"--logdir={logdir} already holds a run; choose a new directory or pass --resume")
        check_logdir_writable(logdir)
        from agdjax import logging as runlog
        runlog.set_console_logging(FLAGS.log_level)

        print(f"agdjax: preset={cfg.preset} device={platform} ({jax.devices()[0].device_kind}) "
              f"task={chosen} backend={cfg.backend} guide={cfg.guide} agent={cfg.agent} "
              f"seeds={seeds}{_sweep_text(cfg, n_members)} total_env_steps={cfg.total_env_steps} logdir={logdir}"
              f"{' (resume)' if saved is not None else ''}", flush=True)
        from agdjax import loop
        try:
            _, _, summary = loop.run(cfg, seeds, logdir, progress=FLAGS.progress,
                                     checkpoint_every=checkpoint_every, resume=saved is not None,
                                     progress_every_s=FLAGS.progress_every_s)
        except loop.NonFiniteError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)
        print(f"done: final eval return {summary.get('final_eval_return_mean', float('nan')):.1f} "
              f"± {summary.get('final_eval_return_std', float('nan')):.1f} at "
              f"{summary.get('final_env_steps')} env steps; compile {summary['compile_s']:.0f}s, "
              f"train {summary['train_s']:.0f}s; run directory {logdir}", flush=True)
        for setting in summary.get("final_eval_return_per_setting", []):  # a sweep: per setting
            values = " ".join(f"{k}={v:g}" for k, v in setting.items() if k not in ("mean", "std", "n"))
            print(f"  {values}: final eval return {setting['mean']:.1f} ± {setting['std']:.1f} "
                  f"({setting['n']} seeds)", flush=True)

    app.run(main, flags_parser=_parse_flags)
