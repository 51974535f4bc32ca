"""The thin Python loop around the compiled program: seeds, chunks, progress, metrics files,
checkpoints, the non-finite guard.

`jax.jit(jax.vmap(run_chunk))` runs all seeds of a run at once; between chunks this loop
checks that no metric and no parameter went non-finite, writes `metrics.jsonl` (one row per
seed per iteration), refreshes progress (env steps, env steps/s, ETA), saves Orbax
checkpoints (agdjax/checkpoint.py) and, at the end, `summary.json` and the learning-curve
plot.

Checkpoints and resuming. A checkpoint `step` c holds the state before chunk c (c chunks
done) and the loop's Python state (rows written so far, each seed's previous train
metrics). Only "clean" states are saved mid-run: every iteration before them trained (c*L <=
n_iters), so a resumed run, even one given a larger budget, computes exactly what a run that
never stopped computes. One is always saved before the last chunk (the one that evaluates at
n_iters), and the final state is saved at the end (`final`; resuming such a run with the
same budget has nothing left to do; with a larger budget it continues from the one before).
"""
from __future__ import annotations

import functools
import json
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from agdjax import checkpoint as ckpt_lib
from agdjax import logging as runlog
from agdjax.config import SWEEPABLE, Config, member_hparams, members as run_members, program_config, saved_values
from agdjax.train import EVAL_METRICS, make_train
from agdjax.wm_error import WM_METRICS


class NonFiniteError(RuntimeError):
    """A metric or a parameter became NaN/inf; the run stopped without saving that state."""


class _Interrupted(RuntimeError):
    """Raised by the `_stop_after_chunk` test hook: the run stops as if killed."""


def seed_sharding(n_seeds: int, devices=None):
    """How the seeds of a run are placed: a `NamedSharding` that splits the leading (seed)
    axis over a 1-D mesh named `seeds` of `devices` (default: `jax.devices()`, every local
    device, and every host's after `jax.distributed.initialize()`), or None on one device
    (the program is then the plain vmapped one, unchanged).

    Raises:
      ValueError: n_seeds does not split evenly over the devices.
    """
    devices = list(jax.devices() if devices is None else devices)
    if len(devices) == 1:
        return None
    if n_seeds % len(devices):
        raise ValueError(f"num_seeds={n_seeds} cannot be split evenly over the {len(devices)} devices; "
                         f"use a multiple of {len(devices)}")
    mesh = jax.sharding.Mesh(np.asarray(devices), ("seeds",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("seeds"))


def compile_program(cfg: Config, n_seeds: int, devices=None):
    """Returns (program, jitted vmapped init, jitted vmapped run_chunk) for n_seeds members.

    init: (keys [n, 2], hparams {name: [n]}) -> TrainState [n, ...]; run_chunk: (state,
    hparams, first iteration) -> (state, metrics {name: [n, iters_per_chunk]}), state donated.
    `hparams` holds every SWEEPABLE setting per member (config.member_hparams): the program
    reads them as traced values (Config.with_hparams), so the members of a sweep, and runs
    that differ only there, share one compiled program. One member runs the per-seed program
    without vmap (same shapes outside). On several devices (see `seed_sharding`) both are
    `shard_map`s over the `seeds` mesh axis: each device runs the vmapped program on its own
    members, with no communication between devices.
    """
    if cfg.model_free:
        from agdjax.model_free import make_model_free_train as build
    else:
        build = make_train
    prog = build(cfg)
    member_init = lambda key, hp: build(cfg.with_hparams(hp)).init(key)
    member_chunk = lambda state, hp, i: build(cfg.with_hparams(hp)).run_chunk(state, i)
    sharding = seed_sharding(n_seeds, devices)
    if n_seeds == 1 and sharding is None:
        # One seed: the per-seed program itself, the seed axis added around it. vmap over an
        # axis of size 1 is not free on XLA:CPU (PPO updates ~60% slower, docs/RESULTS.md).
        lead = lambda tree: jax.tree.map(lambda x: x[None], tree)
        first = lambda tree: jax.tree.map(lambda x: x[0], tree)
        init = lambda keys, hp: lead(member_init(keys[0], first(hp)))
        run_chunk = lambda state, hp, i: lead(member_chunk(first(state), first(hp), i))
    else:
        init, run_chunk = jax.vmap(member_init), jax.vmap(member_chunk, in_axes=(0, 0, None))
    if sharding is not None:
        P = jax.sharding.PartitionSpec
        init = jax.shard_map(init, mesh=sharding.mesh, in_specs=(P("seeds"), P("seeds")),
                             out_specs=P("seeds"), check_vma=False)
        run_chunk = jax.shard_map(run_chunk, mesh=sharding.mesh, in_specs=(P("seeds"), P("seeds"), P()),
                                  out_specs=P("seeds"), check_vma=False)
    return prog, jax.jit(init), jax.jit(run_chunk, donate_argnums=0)


def _place(array, sharding=None):
    """`array` (numpy, leading member axis) on the device(s): split by `sharding` when given (a
    global array: each host fills only its own devices' rows)."""
    if sharding is None:
        return jnp.asarray(array)
    return jax.make_array_from_callback(array.shape, sharding, lambda idx: array[idx])


def seed_keys(seeds, sharding=None):
    """PRNG keys [n_seeds, 2] of `seeds`, placed by `sharding` (see `seed_sharding`)."""
    return _place(np.asarray(jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds, jnp.uint32))), sharding)


def member_inputs(cfg: Config, members, sharding=None):
    """(keys [n, 2], hparams {name: float32 [n]}) of the members (config.members), placed by
    `sharding`: the inputs of the compiled init and run_chunk."""
    hp = {k: _place(np.asarray(v, np.float32), sharding) for k, v in member_hparams(cfg, members).items()}
    return seed_keys([m["seed"] for m in members], sharding), hp


def to_host(tree):
    """numpy copies of a (possibly seed-sharded, possibly multi-host) tree of arrays."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        tree = multihost_utils.process_allgather(tree, tiled=True)
    return jax.tree.map(np.asarray, jax.device_get(tree))


class _Compiled:
    """The compiled init and run_chunk of one (cfg, n_seeds), compiled on first use and kept
    for later runs in the same process (tests, sweeps, resuming in-process). `cfg` is a
    program_config: `prog` (its phases, for tools) holds the default SWEEPABLE values, not a
    run's; rebuild it with make_train(run cfg) where they matter."""

    def __init__(self, cfg: Config, n_seeds: int):
        self.prog, self._init, self._run_chunk = compile_program(cfg, n_seeds)
        self.sharding = seed_sharding(n_seeds)
        self.keys = jax.ShapeDtypeStruct((n_seeds, 2), jnp.uint32, sharding=self.sharding)
        self.hparams = {k: jax.ShapeDtypeStruct((n_seeds,), jnp.float32, sharding=self.sharding)
                        for k in SWEEPABLE}
        self.abstract = ckpt_lib.abstract_like(jax.eval_shape(self._init, self.keys, self.hparams),
                                               self.sharding)
        self.init_c = self.chunk_c = None

    def init(self):
        if self.init_c is None:
            self.init_c = self._init.lower(self.keys, self.hparams).compile()
        return self.init_c

    def chunk(self):
        if self.chunk_c is None:
            self.chunk_c = self._run_chunk.lower(self.abstract, self.hparams, jnp.int32(0)).compile()
        return self.chunk_c


def _compiled(cfg: Config, n_seeds: int) -> _Compiled:
    """The compiled program of (cfg, n_seeds members), shared by every cfg with the same
    program_config (the SWEEPABLE values are its inputs)."""
    return _compiled_program(program_config(cfg), n_seeds)


@functools.lru_cache(maxsize=8)
def _compiled_program(cfg: Config, n_seeds: int) -> _Compiled:
    return _Compiled(cfg, n_seeds)


def compile_message(cfg: Config, n_seeds: int) -> str:
    """The line printed before compiling: what, and where the result is kept for later runs."""
    what = (f"compiling the training program ({cfg.task}, {cfg.backend} backend, "
            f"{'model-free ' + cfg.agent if cfg.model_free else 'guide ' + cfg.guide}, "
            f"{cfg.preset} preset, {n_seeds} {'member' if cfg.sweep else 'seed'}{'s' if n_seeds != 1 else ''}"
            f"{' of a sweep' if cfg.sweep else ''})")
    cache = jax.config.jax_compilation_cache_dir
    if cache:
        return (f"{what}; XLA's output is cached in {cache}, so the next run with the same "
                f"configuration only traces the program")
    return f"{what}; no persistent compilation cache is set (JAX_COMPILATION_CACHE_DIR)"


# ---------------------------------------------------------------------------- resume checks
def resume_mismatch(saved_config: dict, saved_seeds, cfg: Config, seeds) -> str | None:
    """Why a run saved with (saved_config, saved_seeds) cannot continue as (cfg, seeds); None
    if it can. Only total_env_steps may change, and only upwards."""
    if list(saved_seeds) != list(seeds):
        return f"seeds {list(seeds)} differ from the run's seeds {list(saved_seeds)}"
    new, old = cfg.to_dict(), saved_values(saved_config)
    for k in new:
        if k == "total_env_steps":
            continue
        if old[k] != new[k]:
            return (f"{k}={new[k]!r} differs from the run's {k}={old[k]!r}"
                    f"; only total_env_steps may change when resuming")
    if cfg.total_env_steps < saved_config["total_env_steps"]:
        return (f"total_env_steps={cfg.total_env_steps} is less than the run's "
                f"{saved_config['total_env_steps']}; a resumed run can only continue")
    return None


# ---------------------------------------------------------------------------- non-finite guard
# Parts of the TrainState checked after every chunk: every network, optimiser state,
# the normaliser statistics and the action-guidance scale (those the program's state has:
# the model-free state holds only `agent`).
PARAM_FIELDS = ("denoiser", "denoiser_ema", "denoiser_opt", "reward_model", "reward_opt", "agent",
                "log_delta", "norm")


def _finite_flags(state):
    """{field: tree of bool [n_seeds]}: whether every value of the leaf is finite, per seed."""
    def leaf(x):
        if not jnp.issubdtype(x.dtype, jnp.inexact):
            return jnp.ones(x.shape[:1], bool)
        return jnp.all(jnp.isfinite(x).reshape(x.shape[0], -1), axis=1)
    return jax.tree.map(leaf, {f: getattr(state, f) for f in PARAM_FIELDS if hasattr(state, f)})


_finite_flags_jit = jax.jit(_finite_flags)


def _path_str(path) -> str:
    parts = []
    for p in path:
        for attr in ("key", "name", "idx"):
            if hasattr(p, attr):
                parts.append(str(getattr(p, attr)))
                break
        else:
            parts.append(str(p))
    return ".".join(parts)


def nonfinite_parameter(state, seeds):
    """(parameter path, [seeds]) of the first non-finite parameter leaf, or None."""
    flags = to_host(_finite_flags_jit(state))
    for path, ok in jax.tree_util.tree_leaves_with_path(flags):
        ok = np.asarray(ok)
        if not ok.all():
            return "parameter " + _path_str(path), [seeds[i] for i in np.flatnonzero(~ok)]
    return None


def _expected_metrics(cfg: Config, i: int):
    """The metrics that iteration i must compute: a NaN there is an error. Elsewhere NaN is a
    placeholder (no evaluation or agent update this iteration, a diagnostic that the learner
    does not report, no training episode finished yet); inf is an error everywhere."""
    E = cfg.env_steps_per_iter
    out = set()
    if i > cfg.n_iters:
        return out
    if (i < cfg.n_iters and (i * E) % cfg.eval_every == 0) or i == cfg.n_iters:
        out.add("eval_return")
    if i < cfg.n_iters:
        if cfg.diffusion_updates_per_iter > 0:
            out.add("diffusion_loss")
            if cfg.guide == "reward":
                out.add("reward_model_loss")
        if cfg.agent_updates_per_iter > 0 and i * E >= cfg.agent_start_env_steps:
            out.update(("actor_loss", "critic_loss"))
    return out


def nonfinite_metric(cfg: Config, metrics: dict, first_iter: int, seeds):
    """(metric, env step, [seeds]) of the first metric of a chunk that is infinite, or NaN
    where the iteration computed it; None if all are fine. Train metrics of iteration i are
    reported at env step (i+1)*E (the row they are logged in), the evaluation's (EVAL_METRICS)
    at i*E; the world-model error is a diagnostic and never fails a run."""
    E = cfg.env_steps_per_iter
    for j in range(cfg.iters_per_chunk):
        i = first_iter + j
        if i > cfg.n_iters:
            break
        expected = _expected_metrics(cfg, i)
        for k, v in metrics.items():
            col = np.asarray(v)[:, j]
            if k in WM_METRICS:  # a diagnostic: inf/NaN there is logged as missing, not fatal
                continue
            bad = np.isinf(col) | (np.isnan(col) if k in expected else False)
            if bad.any():
                step = i * E if k in EVAL_METRICS else (i + 1) * E
                return k, step, [seeds[s] for s in np.flatnonzero(bad)]
    return None


def _inject_nan(cfg, state, metrics, chunk_first_iter, target):
    """Test hook: poisons one metric value (or, for target 'params', one parameter leaf) of seed
    index 0. Runs in Python between chunks, never inside the compiled program."""
    if target == "params":
        leaves, tree = jax.tree.flatten(state.agent.actor)
        leaves[0] = leaves[0].at[0].set(jnp.nan)
        return state.replace(agent=state.agent.replace(actor=jax.tree.unflatten(tree, leaves))), metrics
    metrics = dict(metrics)
    arr = np.array(metrics[target])
    j = next((j for j in range(cfg.iters_per_chunk)
              if target in _expected_metrics(cfg, chunk_first_iter + j)), 0)
    arr[0, j] = np.nan
    metrics[target] = arr
    return state, metrics


# ---------------------------------------------------------------------------- the run
def run(cfg: Config, seeds, logdir: str | None = None, progress: bool = True, log_fn=print,
        checkpoint_every: int | None = None, resume: bool = False, progress_every_s: float = 30.0, *,
        _inject_nan_at_chunk: int | None = None, _inject_nan_into: str = "diffusion_loss",
        _stop_after_chunk: int | None = None):
    """Trains every seed in `seeds` (list of ints) for cfg.total_env_steps.

    Writes config.json, metrics.jsonl, summary.json (and a plot) under `logdir` when given.
    checkpoint_every: env steps between Orbax checkpoints in <logdir>/checkpoints (rounded to
      whole chunks, at least one); None: no checkpoints. The state before the last chunk and
      the final state are always saved when checkpointing. The last 3 are kept.
    progress: show progress (runlog.Progress: a bar on a terminal, else a plain line at most
      every `progress_every_s` seconds).
    resume: continue the run in `logdir` from its newest valid checkpoint (from the start if
      there is none); metrics.jsonl is cut back to the checkpoint's rows, so the finished
      file equals that of a run that never stopped. cfg may differ from the run's only in a
      larger total_env_steps; seeds must be the same.
    Returns (final TrainState [n_seeds, ...], list of metric rows, summary dict).

    Raises:
      NonFiniteError: a metric or parameter became non-finite (that state is not saved).
      ValueError: resume without a run in logdir, or one that cannot continue as `cfg`.
      FileExistsError: a new run into a logdir that already holds one.
    """
    if _inject_nan_at_chunk is not None and not _inject_nan_into:
        raise ValueError("_inject_nan_at_chunk needs _inject_nan_into (a metric name or 'params')")
    seeds = list(seeds)
    members = run_members(cfg, seeds)  # every (swept values, seed) pair: one vmapped member each
    names = [member_name(m) for m in members]
    L, E, n_iters = cfg.iters_per_chunk, cfg.env_steps_per_iter, cfg.n_iters
    n_chunks = math.ceil((n_iters + 1) / L)
    _check_logdir(cfg, seeds, logdir, resume, checkpoint_every)

    log_fn(compile_message(cfg, len(members)))
    t0 = time.perf_counter()
    compiled = _compiled(cfg, len(members))
    keys, hparams = member_inputs(cfg, members, compiled.sharding)
    t_compile = time.perf_counter() - t0

    ckpt = None
    if logdir and (checkpoint_every is not None or resume):
        ckpt = ckpt_lib.Checkpointer(os.path.join(logdir, "checkpoints"), log_fn=log_fn)
    every_chunks = max(1, round(checkpoint_every / (L * E))) if checkpoint_every else None

    restored = stale_after = None
    t_prefill = 0.0
    if resume:
        t0 = time.perf_counter()
        restored = _restore(cfg, seeds, names, logdir, ckpt, compiled.abstract, log_fn)
        if restored is not None and restored.driver["final"]:  # same budget: nothing left to run
            return _completed_run(restored, logdir, seeds, members, ckpt, log_fn)
        # the checkpoints after the one continued from are removed only once the run has new
        # rows (or before its first save): a resume killed before that leaves the run as it was
        stale_after = restored.step if restored else -1
        t_prefill = time.perf_counter() - t0

    writer = None
    if logdir and jax.process_index() == 0:  # with several hosts, one writes the run's files
        writer = runlog.RunWriter(logdir, cfg, seeds, members,
                                  keep_rows=(restored.driver["rows"] if restored else 0) if resume else None)
    try:
        if restored is not None:
            state, start_chunk = restored.state, restored.driver["next_chunk"]
            prev_train = [None if p is None else dict(p) for p in restored.driver["prev_train"]]
        else:
            state, t_init_compile, t_prefill = _fresh_state(compiled, keys, hparams)
            t_compile += t_init_compile
            start_chunk, prev_train = 0, [None] * len(members)
        rows = list(writer.rows) if writer else []
        if start_chunk < n_chunks:
            t0 = time.perf_counter()
            chunk_c = compiled.chunk()
            t_compile += time.perf_counter() - t0
        log_fn(f"compiled in {t_compile:.1f} s")
        driver = lambda c, final=False: _driver_state(cfg, seeds, c, final, len(rows), prev_train)

        bar = runlog.Progress(cfg.total_env_steps, enabled=progress and jax.process_index() == 0,
                              initial=min(start_chunk * L, n_iters) * E, every_s=progress_every_s)
        resumed_at = start_chunk if restored is not None else None  # that state is saved already
        t_run = time.perf_counter()
        for c in range(start_chunk, n_chunks):
            if ckpt is not None and _save_due(c, every_chunks, n_chunks, resumed_at):
                stale_after = _drop_stale(ckpt, stale_after)
                ckpt.save(c, state, driver(c))
            inject = _inject_nan_into if c == _inject_nan_at_chunk else None  # test hook: a metric or "params"
            state, new_rows, sps = _run_chunk(cfg, chunk_c, state, hparams, c, members, names, prev_train,
                                              ckpt, log_fn, inject)
            rows.extend(new_rows)
            if writer:
                writer.write_rows(new_rows)
            stale_after = _drop_stale(ckpt, stale_after)
            bar.update(min(n_iters, (c + 1) * L) * E, sps, _last_eval(rows))
            if c == _stop_after_chunk:
                raise _Interrupted(f"test hook: stopped after chunk {c}")
        bar.close()
        t_total = time.perf_counter() - t_run
        stale_after = _drop_stale(ckpt, stale_after)
        if ckpt is not None and every_chunks and start_chunk < n_chunks:
            ckpt.save(n_chunks, state, driver(n_chunks, final=True))
        steps_run = (n_iters - min(start_chunk * L, n_iters)) * E
        summary = _summary(rows, seeds, members, restored, steps_run,
                           compile_s=t_compile, prefill_s=t_prefill, train_s=t_total)
        if writer:
            writer.finish(summary)
        return state, rows, summary
    finally:
        if writer:
            writer.close()
        if ckpt is not None:
            ckpt.close()


def _check_logdir(cfg: Config, seeds, logdir, resume: bool, checkpoint_every):
    """run's checks of its arguments against what `logdir` holds, before anything is written.

    Raises:
      ValueError: checkpoints or resume without a logdir, checkpoint_every <= 0, or a resume
        of a logdir without a run or with one that cannot continue as (cfg, seeds).
      FileExistsError: a new run into a logdir that holds metrics or checkpoints.
    """
    if (resume or checkpoint_every is not None) and not logdir:
        raise ValueError("checkpoints and resume need a logdir")
    if checkpoint_every is not None and checkpoint_every <= 0:
        raise ValueError(f"checkpoint_every={checkpoint_every} must be positive")
    if resume:
        if not os.path.exists(os.path.join(logdir, "config.json")):
            raise ValueError(f"cannot resume: {logdir} holds no run (no config.json)")
        why = resume_mismatch(*runlog.read_config(logdir), cfg, seeds)
        if why:
            raise ValueError(f"cannot resume the run in {logdir}: {why}")
    elif logdir:
        if os.path.exists(os.path.join(logdir, "metrics.jsonl")):
            raise FileExistsError(f"{logdir} already holds a run (metrics.jsonl); resume it or use a new logdir")
        ck_dir = os.path.join(logdir, "checkpoints")
        if os.path.isdir(ck_dir) and os.listdir(ck_dir):
            raise FileExistsError(f"{ck_dir} already holds checkpoints; resume the run or use a new logdir")


def _completed_run(restored, logdir: str, seeds, members, ckpt, log_fn):
    """run's return for a resume of a run that already finished with the same budget: its
    final state, its rows and its summary (re-made from the rows if summary.json is lost)."""
    log_fn(f"resume: the run in {logdir} is already complete")
    ckpt.close()
    rows = runlog.read_rows(logdir)[:restored.driver["rows"]]
    try:
        with open(os.path.join(logdir, "summary.json")) as f:
            summary = json.load(f)
    except (OSError, ValueError):
        summary = runlog.summarize(rows, seeds, members)
    return restored.state, rows, summary


def _fresh_state(compiled: _Compiled, keys, hparams):
    """(the members' state after init and prefill, init's compile seconds, prefill seconds)."""
    t0 = time.perf_counter()
    init_c = compiled.init()
    t_compile = time.perf_counter() - t0
    t0 = time.perf_counter()
    state = jax.block_until_ready(init_c(keys, hparams))
    return state, t_compile, time.perf_counter() - t0


def _save_due(c: int, every_chunks, n_chunks: int, resumed_at=None) -> bool:
    """Whether the state before chunk c is checkpointed: every `every_chunks` chunks (None:
    never) and always before the last chunk, but not the state a resume started from
    (chunk `resumed_at`), which is already saved."""
    if not every_chunks or c == resumed_at:
        return False
    return (c > 0 and c % every_chunks == 0) or c == n_chunks - 1


def _summary(rows, seeds, members, restored, steps_run: int, *, compile_s, prefill_s, train_s) -> dict:
    """summary.json of a finished run: runlog.summarize's curve statistics and the run's
    times (s), its training rate (env steps/s over the chunks run) and sizes."""
    summary = runlog.summarize(rows, seeds, members)
    summary.update(compile_s=compile_s, prefill_s=prefill_s, train_s=train_s,
                   env_steps_per_s=steps_run / train_s if train_s > 0 and steps_run else float("nan"),
                   n_seeds=len(seeds), n_members=len(members))
    if restored is not None:
        summary["resumed_from_env_steps"] = restored.driver["env_steps"]
    return summary


def _driver_state(cfg: Config, seeds, c: int, final: bool, n_rows: int, prev_train: list) -> dict:
    """The loop's Python state saved with checkpoint step c (see the module docstring)."""
    L, E = cfg.iters_per_chunk, cfg.env_steps_per_iter
    return {"step": c, "next_chunk": c, "final": final, "rows": n_rows,
            "prev_train": prev_train, "env_steps": min(c * L, cfg.n_iters) * E, "n_iters": cfg.n_iters,
            "iters_per_chunk": L, "seeds": seeds, "config": cfg.to_dict()}


def _run_chunk(cfg: Config, chunk_c, state, hparams, c: int, members, names, prev_train, ckpt, log_fn,
               inject_nan_into=None):
    """Runs chunk c, checks it is finite (NonFiniteError otherwise) -> (state, its metrics.jsonl
    rows, env steps/s). prev_train is updated in place (chunk_rows). inject_nan_into: test
    hook (_inject_nan)."""
    L, E = cfg.iters_per_chunk, cfg.env_steps_per_iter
    t_c = time.perf_counter()
    state, metrics = chunk_c(state, hparams, jnp.int32(c * L))
    metrics = to_host(metrics)
    dt = time.perf_counter() - t_c
    if inject_nan_into is not None:
        state, metrics = _inject_nan(cfg, state, metrics, c * L, inject_nan_into)
    _check_finite(cfg, state, metrics, c, names, ckpt, log_fn)
    n_train_iters = max(0, min(cfg.n_iters, (c + 1) * L) - c * L)
    sps = n_train_iters * E / dt if dt > 0 else float("nan")
    return state, chunk_rows(cfg, members, metrics, c * L, sps, prev_train), sps


def _restore(cfg: Config, seeds, names, logdir: str, ckpt, abstract, log_fn):
    """The newest checkpoint in `logdir` that can continue as (cfg, seeds), or None (the run
    then starts over; nothing was written yet). names: the members' names for messages.

    Raises:
      ValueError: the run has checkpoints and rows but no checkpoint restores into this program.
    """
    L, n_iters = cfg.iters_per_chunk, cfg.n_iters
    n_lines = runlog.count_rows(logdir)

    def accept(d):
        why = resume_mismatch(d.get("config", {}), d.get("seeds", []), cfg, seeds)
        if why:
            return why
        if d["iters_per_chunk"] != L:
            return "different iters_per_chunk"
        if d["rows"] > n_lines:
            return f"its {d['rows']} rows are not all in metrics.jsonl ({n_lines})"
        if d["final"]:
            return None if d["n_iters"] == n_iters else (
                "the final state of a shorter run (continuing uses the state before its last chunk)")
        if d["next_chunk"] * L > n_iters:
            return "past this run's budget"
        return None

    def valid_state(s):
        bad = nonfinite_parameter(s, names)
        return f"non-finite {bad[0]} (seeds {bad[1]})" if bad else None

    restored = ckpt.restore(abstract, accept=accept, validate_state=valid_state)
    if restored is None and ckpt.all_steps() and runlog.count_rows(logdir) > 0:
        ckpt.close()
        raise ValueError(f"cannot resume the run in {logdir}: it has checkpoints {ckpt.all_steps()} but none "
                         f"restores into this program (made by an older agdjax, or damaged); nothing was "
                         f"changed: start a new --logdir")
    if restored is None:
        log_fn(f"resume: no valid checkpoint in {ckpt.directory}; starting {logdir} from the beginning")
    else:
        log_fn(f"resume: continuing {logdir} from checkpoint step {restored.step} "
               f"(env step {restored.driver['env_steps']})")
    return restored


def chunk_rows(cfg: Config, members, metrics, first_iter: int, sps: float, prev_train: list) -> list:
    """The metrics.jsonl rows of one chunk: per iteration i <= n_iters, one row per member,
    {**member, env_steps: i*E, env_steps_per_s, the train metrics of iteration i-1 (at the env
    steps they reached), the evaluation metrics of iteration i (at the step evaluated)}.
    NaN placeholders are left out. `prev_train` (per member, the train metrics not yet
    written) is updated in place."""
    rows = []
    for j in range(cfg.iters_per_chunk):
        i = first_iter + j
        if i > cfg.n_iters:
            break
        for m_idx, member in enumerate(members):  # {"seed": s} and the swept values
            row = {**member, "env_steps": i * cfg.env_steps_per_iter, "env_steps_per_s": sps}
            if prev_train[m_idx] is not None:
                row.update(prev_train[m_idx])
            for k in EVAL_METRICS:  # evaluation-phase metrics belong to the step evaluated
                ev = float(metrics[k][m_idx, j]) if k in metrics else float("nan")
                if math.isfinite(ev):
                    row[k] = ev
            rows.append(row)
            prev_train[m_idx] = {k: float(v[m_idx, j]) for k, v in metrics.items()
                                 if k not in EVAL_METRICS and not math.isnan(float(v[m_idx, j]))}
    return rows


def _drop_stale(ckpt, stale_after):
    """Removes the checkpoints newer than step `stale_after` (those of the run before a resume
    that the resumed run replaces); returns None, the new `stale_after` (nothing left to do)."""
    if ckpt is not None and stale_after is not None:
        ckpt.delete_after(stale_after)
    return None


def member_name(member: dict):
    """How messages name a member: its seed, with the swept values if any ("0 (guide_scale=3)")."""
    swept = [f"{k}={v!r}" for k, v in member.items() if k != "seed"]
    return f"{member['seed']} ({', '.join(swept)})" if swept else member["seed"]


def _check_finite(cfg, state, metrics, c, seeds, ckpt, log_fn):
    L, E = cfg.iters_per_chunk, cfg.env_steps_per_iter
    bad = nonfinite_metric(cfg, metrics, c * L, seeds)
    if bad:
        what, step, bad_seeds = bad
    else:
        badp = nonfinite_parameter(state, seeds)
        if not badp:
            return
        what, bad_seeds = badp
        step = min(cfg.n_iters, (c + 1) * L) * E
    seed_s = f"seed {bad_seeds[0]}" if len(bad_seeds) == 1 else f"seeds {', '.join(map(str, bad_seeds))}"
    last = ""
    if ckpt is not None:
        good = ckpt.valid_steps()
        last = (f"; last good checkpoint: {ckpt.step_dir(good[-1])}" if good else "; no checkpoint saved yet")
    raise NonFiniteError(f"non-finite {what} for {seed_s} at env step {step}: run stopped, this "
                         f"state was not saved{last}")


def _last_eval(rows):
    curve = runlog.eval_curve(rows)
    return float(np.mean(curve[max(curve)])) if curve else float("nan")
