"""The thin Python loop around the compiled program: seeds, chunks, progress, metrics files.

`jax.jit(jax.vmap(run_chunk))` runs all seeds of a run at once; between chunks this loop
writes `metrics.jsonl` (one row per seed per iteration), refreshes progress (env steps,
env steps/s, ETA) and, at the end, `summary.json` and the learning-curve plot.
"""
from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from agdjax import logging as runlog
from agdjax.config import Config
from agdjax.train import make_train


def compile_program(cfg: Config, n_seeds: int):
    """Returns (program, jitted vmapped init, jitted vmapped run_chunk)."""
    prog = make_train(cfg)
    init = jax.jit(jax.vmap(prog.init))
    run_chunk = jax.jit(jax.vmap(prog.run_chunk, in_axes=(0, None)), donate_argnums=0)
    return prog, init, run_chunk


def seed_keys(seeds):
    return jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds, jnp.uint32))


def run(cfg: Config, seeds, logdir: str | None = None, progress: bool = True, log_fn=print):
    """Trains every seed in `seeds` (list of ints) for cfg.total_env_steps.

    Writes config.json, metrics.jsonl, summary.json (and a plot) under `logdir` when given.
    Returns (final TrainState [n_seeds, ...], list of metric rows, summary dict).
    """
    seeds = list(seeds)
    writer = runlog.RunWriter(logdir, cfg, seeds) if logdir else None
    prog, init, run_chunk = compile_program(cfg, len(seeds))

    t0 = time.perf_counter()
    keys = seed_keys(seeds)
    init_c = init.lower(keys).compile()
    t_init_compile = time.perf_counter() - t0
    t0 = time.perf_counter()
    state = jax.block_until_ready(init_c(keys))
    t_prefill = time.perf_counter() - t0
    t0 = time.perf_counter()
    chunk_c = run_chunk.lower(state, jnp.int32(0)).compile()
    t_compile = time.perf_counter() - t0 + t_init_compile

    L = cfg.iters_per_chunk
    n_chunks = math.ceil((cfg.n_iters + 1) / L)
    E = cfg.env_steps_per_iter
    rows, prev_train = [], [None] * len(seeds)
    bar = runlog.Progress(cfg.total_env_steps, enabled=progress)
    t_run = time.perf_counter()
    for c in range(n_chunks):
        t_c = time.perf_counter()
        state, metrics = chunk_c(state, jnp.int32(c * L))
        metrics = jax.tree.map(np.asarray, jax.device_get(metrics))
        dt = time.perf_counter() - t_c
        n_train_iters = max(0, min(cfg.n_iters, (c + 1) * L) - c * L)
        sps = n_train_iters * E / dt if dt > 0 else float("nan")
        new_rows = []
        for j in range(L):
            i = c * L + j
            if i > cfg.n_iters:
                break
            for s_idx, seed in enumerate(seeds):
                row = {"seed": seed, "env_steps": i * E, "env_steps_per_s": sps}
                if prev_train[s_idx] is not None:
                    row.update(prev_train[s_idx])
                ev = float(metrics["eval_return"][s_idx, j])
                if not math.isnan(ev):
                    row["eval_return"] = ev
                new_rows.append(row)
                prev_train[s_idx] = {k: float(v[s_idx, j]) for k, v in metrics.items()
                                     if k != "eval_return" and not math.isnan(float(v[s_idx, j]))}
        rows.extend(new_rows)
        if writer:
            writer.write_rows(new_rows)
        bar.update(min(cfg.n_iters, (c + 1) * L) * E, sps, _last_eval(rows))
    bar.close()
    t_total = time.perf_counter() - t_run
    summary = runlog.summarize(rows, seeds)
    summary.update(compile_s=t_compile, prefill_s=t_prefill, train_s=t_total,
                   env_steps_per_s=cfg.total_env_steps / t_total if t_total > 0 else float("nan"),
                   n_seeds=len(seeds))
    if writer:
        writer.finish(summary)
    return state, rows, summary


def _last_eval(rows):
    curve = runlog.eval_curve(rows)
    return float(np.mean(curve[max(curve)])) if curve else float("nan")
