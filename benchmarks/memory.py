"""A memory plan for many seeds per accelerator: bytes per seed and the largest seed count
that fits a device's memory.

    python -m benchmarks.memory --preset=paper --num_seeds=1,2,4 [--device_memory_gb=80]
    python -m benchmarks.memory --preset=paper --num_seeds=1,2 --wm_error_batch=0  # no wm-error diagnostic

Nothing is run and no state is allocated: the state's sizes come from `jax.eval_shape` of
the vmapped init (`loop.compile_program`, one device), the program's from XLA's memory
analysis of the compiled `run_chunk` (`Compiled.memory_analysis()`) at each N in
--num_seeds, and of each phase of one iteration (`Program.phases`, vmapped over N seeds)
to find the one whose temporaries (activations) are largest. Reported:
- the state's bytes per seed by part: replay, denoiser (params + EMA + Adam), reward model
  (+ Adam), agent (actor/critic params, target critic, optimisers), environment (simulator
  state, episode returns), other (normaliser, PRNG key, scalars). The parts sum exactly to
  the whole state's bytes, and the whole / N is the bytes per seed;
- the compiled program's argument, output, aliased, temporary and code bytes per N, and a
  line bytes = fixed + per_seed * N fitted to each over the N measured (where memory grows
  with N, and what does not);
- the state's large buffers that XLA copies inside run_chunk (`copy` ops of the optimised
  HLO with a state leaf's shape): memory the phases alone do not need;
- the plan: run_chunk donates the state, so its output state reuses (aliases) the input's
  buffers and the state is counted once; the rest (temporaries, the metrics out, the
  per-member hyperparameters in) is fitted as fixed + per_seed * N. The largest N that fits
  is floor((usable - fixed) / (state per seed + rest per seed)), usable = --device_memory_gb
  * 1e9 * --memory_fraction (JAX preallocates 75% of a GPU unless
  XLA_PYTHON_CLIENT_MEM_FRACTION says otherwise). A negative fitted fixed part is taken as 0.
  With one N the rest is all counted per seed.

N = 1 compiles the per-seed program without a seed vmap (as the driver runs one seed), so a
fit over {1, 2} mixes two programs; fit over N >= 2 for the growth at large N. On a CPU the
analysis is of the CPU compile: a GPU compile fuses and lays out buffers differently (and
adds cuBLAS/cuDNN workspaces), so take CPU numbers as an estimate of the GPU's. Writes JSON
(--out, default benchmarks/results/memory_<platform>_<preset>.json) and prints a markdown
table.
"""
from __future__ import annotations

import math
import os
import re
import sys
import time

from benchmarks.cli import Parser, UsageError, fail, write_result

GROUPS = {  # TrainState field -> part of the plan; fields not named here are "other"
    "replay": "replay",
    "denoiser": "denoiser", "denoiser_ema": "denoiser", "denoiser_opt": "denoiser",
    "reward_model": "reward_model", "reward_opt": "reward_model",
    "agent": "agent",
    "env": "environment", "episode_return": "environment",
}
GROUP_NAMES = ("replay", "denoiser", "reward_model", "agent", "environment", "other")
STATS = ("argument", "output", "alias", "temp", "generated_code")  # CompiledMemoryStats *_size_in_bytes
MB = 1e6


# ---------------------------------------------------------------------------- pure arithmetic
def nbytes(tree) -> int:
    """Bytes of every leaf of a pytree of arrays or ShapeDtypeStructs (size * itemsize)."""
    import jax
    import numpy as np
    return sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def state_groups(state) -> dict:
    """{part: bytes} of a TrainState (or ShapeDtypeStructs of one), every top-level field in
    exactly one part (GROUPS, else "other"), so the parts sum to nbytes(state)."""
    import dataclasses
    out = {g: 0 for g in GROUP_NAMES}
    for f in dataclasses.fields(state):
        out[GROUPS.get(f.name, "other")] += nbytes(getattr(state, f.name))
    return out


def fit_line(ns, ys):
    """Least-squares (fixed, per_seed) of ys = fixed + per_seed * n, in the units of ys.
    One point: (0, y / n), all of it counted per seed."""
    if len(ns) == 1:
        return 0.0, ys[0] / ns[0]
    mn, my = sum(ns) / len(ns), sum(ys) / len(ys)
    b = sum((n - mn) * (y - my) for n, y in zip(ns, ys)) / sum((n - mn) ** 2 for n in ns)
    return my - b * mn, b


def max_seeds(device_bytes: float, fixed_bytes: float, per_seed_bytes: float) -> int:
    """The largest N with fixed + N * per_seed <= device (bytes); 0 if not even one fits.

    Raises:
      ValueError: per_seed_bytes <= 0.
    """
    if per_seed_bytes <= 0:
        raise ValueError(f"per_seed_bytes={per_seed_bytes} must be positive")
    return max(0, math.floor((device_bytes - max(fixed_bytes, 0.0)) / per_seed_bytes))


def memory_stats(compiled) -> dict:
    """{argument, output, alias, temp, generated_code, xla_peak}: bytes from XLA's memory
    analysis of a compiled executable; None where the backend does not report one."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # not implemented on every backend
        m = None
    out = {k: getattr(m, f"{k}_size_in_bytes", None) for k in STATS}
    out["xla_peak"] = getattr(m, "peak_memory_in_bytes", None)
    return out


def extra_bytes(stats: dict, state_total: int) -> int | None:
    """Bytes live during one run_chunk call beyond the state (state_total bytes, held once):
    temporaries + code + the other inputs (hyperparameters, iteration) + the outputs that
    alias no input (metrics; the output state aliases the donated input state). None where
    XLA reported no sizes."""
    if any(stats[k] is None for k in ("argument", "output", "alias", "temp")):
        return None
    return (stats["temp"] + (stats["generated_code"] or 0) + max(stats["argument"] - state_total, 0)
            + (stats["output"] - stats["alias"]))


# ---------------------------------------------------------------------------- compiling
def abstract_program(cfg, n: int):
    """(program, jitted vmapped run_chunk, state ShapeDtypeStructs [n, ...], hparams
    ShapeDtypeStructs {name: [n]}) of n members on one device; nothing is allocated."""
    import jax
    import jax.numpy as jnp
    from agdjax import loop
    from agdjax.config import SWEEPABLE
    prog, init, run_chunk = loop.compile_program(cfg, n, jax.devices()[:1])
    keys = jax.ShapeDtypeStruct((n, 2), jnp.uint32)
    hparams = {k: jax.ShapeDtypeStruct((n,), jnp.float32) for k in SWEEPABLE}
    return prog, run_chunk, jax.eval_shape(init, keys, hparams), hparams


def analyse_program(cfg, n: int) -> dict:
    """State bytes (total and by part) and run_chunk's compiled memory for n seeds, with
    lower/compile seconds; also returns the program and the state's shapes under '_prog',
    '_state' (not written to JSON)."""
    import jax
    import jax.numpy as jnp
    prog, run_chunk, state, hparams = abstract_program(cfg, n)
    t0 = time.perf_counter()
    lowered = run_chunk.lower(state, hparams, jax.ShapeDtypeStruct((), jnp.int32))
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    stats, total = memory_stats(compiled), nbytes(state)
    try:
        copies = state_copies(compiled.as_text(), state, n)
    except Exception:  # the optimised HLO text is best effort
        copies = None
    return {"state_bytes": total, "state_groups": state_groups(state), "run_chunk": stats,
            "extra_bytes": extra_bytes(stats, total), "state_copies": copies, "lower_s": t1 - t0,
            "compile_s": t2 - t1, "_prog": prog, "_state": state}


_HLO_DTYPES = {"f32": "float32", "bf16": "bfloat16", "f16": "float16", "f64": "float64", "s32": "int32",
               "u32": "uint32", "s8": "int8", "u8": "uint8", "pred": "bool", "s64": "int64", "u64": "uint64"}
_COPY = re.compile(r"= (\w+)\[([\d,]*)\]\{[^}]*\} copy\(")


def state_copies(hlo_text: str, state, n: int, min_share: float = 0.01) -> list:
    """The state's large buffers that XLA copies inside a compiled program (`copy`
    instructions of the optimised HLO whose shape is a state leaf's, [n, ...], or its
    per-seed shape when n = 1): [{"shape", "bytes_per_seed", "copies", "leaves"}], largest
    first. Leaves under min_share of the state are left out. A copy is one more buffer of
    that size among the temporaries while it lives; `leaves` names every leaf of that shape
    (the copy may be of any of them); `copies` counts the instructions, not live buffers."""
    import jax
    import numpy as np
    total = nbytes(state) / n
    by_shape = {}
    for path, x in jax.tree_util.tree_leaves_with_path(state):
        b = math.prod(x.shape[1:]) * np.dtype(x.dtype).itemsize
        if b >= min_share * total:
            key = (np.dtype(x.dtype).name, tuple(x.shape[1:]))
            by_shape.setdefault(key, {"bytes_per_seed": b, "leaves": []})["leaves"].append(
                jax.tree_util.keystr(path, simple=True, separator="."))
    out = {}
    for dtype, dims in _COPY.findall(hlo_text):
        dims = tuple(int(d) for d in dims.split(",") if d)
        per_seed = dims[1:] if dims[:1] == (n,) else dims if n == 1 else None
        key = (_HLO_DTYPES.get(dtype, dtype), per_seed)
        if key in by_shape:
            hit = out.setdefault(key, dict(by_shape[key], shape=f"{dtype}[{','.join(map(str, key[1]))}]", copies=0))
            hit["copies"] += 1
    return sorted(out.values(), key=lambda v: -v["bytes_per_seed"])


def analyse_phase(fn, state, n: int) -> dict:
    """Compiled memory (memory_stats) of jit(vmap(phase))(state [n, ...], keys [n, 2]), with
    its compile seconds. Phases are not donated: a phase that returns the state has it in
    its output bytes too; `temp` is its activations."""
    import jax
    import jax.numpy as jnp
    t0 = time.perf_counter()
    compiled = jax.jit(jax.vmap(fn)).lower(state, jax.ShapeDtypeStruct((n, 2), jnp.uint32)).compile()
    return dict(memory_stats(compiled), compile_s=time.perf_counter() - t0)


# ---------------------------------------------------------------------------- the plan
def measure(cfg, ns, phases, log=print) -> dict:
    """{"state", "run_chunk", "phases"} for every N in ns (sorted): bytes by N and, for each
    measure, the fitted line {"fixed", "per_seed"} (bytes) over the N measured.

    phases: names of Program.phases to analyse at every N (None: all of them)."""
    state, chunk, phase_res = {}, {}, {}
    for n in ns:
        log(f"N={n}: tracing and compiling run_chunk ({cfg.preset}, {cfg.backend})")
        r = analyse_program(cfg, n)
        prog, st = r.pop("_prog"), r.pop("_state")
        state[str(n)] = {"total": r["state_bytes"], "groups": r["state_groups"]}
        chunk[str(n)] = dict(r["run_chunk"], extra=r["extra_bytes"], state_copies=r["state_copies"],
                             lower_s=r["lower_s"], compile_s=r["compile_s"])
        for name in (list(prog.phases) if phases is None else phases):
            log(f"N={n}: compiling phase {name}")
            phase_res.setdefault(name, {"by_n": {}})["by_n"][str(n)] = analyse_phase(prog.phases[name], st, n)
        del prog, st
    for v in phase_res.values():
        v["fit"] = _fits(ns, v["by_n"], ("argument", "output", "temp"))
    return {"state": {"by_n": state, "per_seed": _state_per_seed(state)},
            "run_chunk": {"by_n": chunk, "fit": _fits(ns, chunk, STATS + ("extra",))},
            "phases": phase_res}


def _state_per_seed(by_n: dict) -> dict:
    """{"total", "groups"}: the state's bytes per seed (every leaf has the seed axis in
    front, so bytes at N are exactly N times these)."""
    n, v = max(by_n.items(), key=lambda kv: int(kv[0]))
    per = lambda b: b // int(n) if b % int(n) == 0 else b / int(n)
    return {"total": per(v["total"]), "groups": {g: per(b) for g, b in v["groups"].items()}}


def _fits(ns, by_n: dict, keys) -> dict:
    """{key: {"fixed", "per_seed"}} (bytes) fitted over ns; None where a value is missing."""
    out = {}
    for k in keys:
        ys = [by_n[str(n)].get(k) for n in ns]
        if any(y is None for y in ys):
            out[k] = None
            continue
        a, b = fit_line(list(ns), ys)
        out[k] = {"fixed": a, "per_seed": b}
    return out


def plan(res: dict, device_bytes: float) -> dict:
    """The largest N for `device_bytes` usable bytes: per seed = state per seed (donated:
    counted once) + run_chunk's other bytes per seed (the fitted `extra` line); fixed =
    that line's fixed part (0 if negative). None where XLA reported no sizes."""
    state_ps = res["state"]["per_seed"]["total"]
    fit = res["run_chunk"]["fit"].get("extra")
    phases = {k: v["by_n"] for k, v in res["phases"].items()}
    n_top = max(res["num_seeds"])
    temps = {k: v[str(n_top)].get("temp") for k, v in phases.items() if v[str(n_top)].get("temp") is not None}
    out = {"usable_bytes": device_bytes, "state_bytes_per_seed": state_ps,
           "largest_phase": max(temps, key=temps.get) if temps else None,
           "largest_phase_temp_bytes_per_seed": max(temps.values()) / n_top if temps else None}
    if fit is None:
        return dict(out, extra_bytes_per_seed=None, fixed_bytes=None, per_seed_bytes=None, max_seeds=None)
    per_seed = state_ps + fit["per_seed"]
    return dict(out, extra_bytes_per_seed=fit["per_seed"], fixed_bytes=max(fit["fixed"], 0.0),
                per_seed_bytes=per_seed, max_seeds=max_seeds(device_bytes, fit["fixed"], per_seed))


# ---------------------------------------------------------------------------- output
def _mb(b) -> str:
    """Bytes as MB (1e6): whole MB from 100 up, else 3 significant digits."""
    if b is None:
        return "n/a"
    return f"{b / MB:,.0f}" if abs(b) >= 100 * MB else f"{b / MB:.3g}"


def table(res: dict) -> str:
    """The JSON as markdown: state per seed by part, run_chunk by N with its fitted line,
    phase temporaries by N, and the plan."""
    ns = [str(n) for n in res["num_seeds"]]
    head = " | ".join(f"N={n}" for n in ns)
    sep = "|---" * (len(ns) + 3) + "|"
    st, p = res["state"]["per_seed"], res["plan"]
    lines = [f"device: {res['device']} ({res['platform']}), task {res['task']}, backend {res['backend']}, preset "
             f"{res['preset']}, guide {res['guide']}, denoiser {res['denoiser_dtype']}, wm_error_batch "
             f"{res['wm_error_batch']}; MB = 1e6 bytes", ""]
    if res.get("note"):
        lines += [f"**{res['note']}**", ""]
    lines += ["| state part | MB per seed | share |", "|---|---|---|"]
    for g, b in st["groups"].items():
        lines.append(f"| {g} | {_mb(b)} | {b / st['total']:.1%} |")
    lines += [f"| **total** (= all leaves / N) | {_mb(st['total'])} | 100% |", "",
              f"| run_chunk (MB) | {head} | fixed | per seed |", sep]
    names = {"argument": "arguments (state + hparams)", "output": "outputs (state + metrics)",
             "alias": "aliased (donated state)", "temp": "temporaries (activations)",
             "generated_code": "generated code", "extra": "all but the state"}
    for k, label in names.items():
        f = res["run_chunk"]["fit"].get(k)
        vals = " | ".join(_mb(res["run_chunk"]["by_n"][n].get(k)) for n in ns)
        lines.append(f"| {label} | {vals} | {_mb(f and f['fixed'])} | {_mb(f and f['per_seed'])} |")
    if res["phases"]:
        lines += ["", f"| phase temporaries (MB) | {head} | fixed | per seed |", sep]
        for name, v in res["phases"].items():
            f = v["fit"].get("temp")
            vals = " | ".join(_mb(v["by_n"][n].get("temp")) for n in ns)
            lines.append(f"| {name} | {vals} | {_mb(f and f['fixed'])} | {_mb(f and f['per_seed'])} |")
    copies = res["run_chunk"]["by_n"][ns[-1]].get("state_copies")
    if copies:
        lines += ["", f"| state buffer copied inside run_chunk (N={ns[-1]}) | MB per seed | copy ops | leaves of "
                  f"that shape |", "|---|---|---|---|"]
        for c in copies:
            more = f" (+{len(c['leaves']) - 2} more)" if len(c["leaves"]) > 2 else ""
            lines.append(f"| {c['shape']} | {_mb(c['bytes_per_seed'])} | {c['copies']} | "
                         f"{', '.join(c['leaves'][:2])}{more} |")
    lines += ["", grows_text(res), "", plan_text(res)]
    return "\n".join(lines)


def grows_text(res: dict) -> str:
    """Where memory grows with N, in words: the state's largest part, run_chunk's fitted
    temporaries per seed against the largest phase's own, and what stays fixed."""
    st, fit, p = res["state"]["per_seed"], res["run_chunk"]["fit"], res["plan"]
    top = max(st["groups"], key=st["groups"].get)
    text = f"grows with N: the state, {_mb(st['total'])} MB per seed ({top} {st['groups'][top] / st['total']:.0%})"
    temp = fit.get("temp")
    if temp is not None:
        text += f"; run_chunk's temporaries, {_mb(temp['per_seed'])} MB per seed"
        phase = p["largest_phase_temp_bytes_per_seed"]
        if phase is not None and temp["per_seed"] > 1.1 * phase:
            copies = res["run_chunk"]["by_n"][str(max(res["num_seeds"]))].get("state_copies")
            see = ": see the copies above" if copies else ""
            text += (f" (the largest phase alone, {p['largest_phase']}: {_mb(phase)} MB; the other "
                     f"{_mb(temp['per_seed'] - phase)} MB outlive one phase{see})")
        elif phase is not None:
            text += f" (about the largest phase's own: {p['largest_phase']}, {_mb(phase)} MB)"
        text += f"; fixed: {_mb(fit['extra']['fixed'])} MB"
    return text + "."


def plan_text(res: dict) -> str:
    """The plan in words, with its assumption."""
    p = res["plan"]
    usable = f"{res['device_memory_gb']:g} GB x {res['memory_fraction']:g} = {p['usable_bytes'] / 1e9:.1f} GB"
    if p["max_seeds"] is None:
        return f"largest N on {usable}: n/a (XLA reported no memory sizes on this backend)"
    phase = (f"; largest phase by temporaries: {p['largest_phase']} "
             f"({_mb(p['largest_phase_temp_bytes_per_seed'])} MB per seed at N={max(res['num_seeds'])})"
             if p["largest_phase"] else "")
    return (f"largest N on {usable}: **{p['max_seeds']}** = floor((usable - {_mb(p['fixed_bytes'])} MB fixed) / "
            f"{_mb(p['per_seed_bytes'])} MB per seed); per seed = state {_mb(p['state_bytes_per_seed'])} MB "
            f"(donated to run_chunk: counted once) + {_mb(p['extra_bytes_per_seed'])} MB of temporaries and "
            f"metrics (fitted over N={','.join(map(str, res['num_seeds']))}){phase}")


# ---------------------------------------------------------------------------- command line
def parse_args(argv):
    """(namespace, list of N). Raises UsageError with a one-line message."""
    p = Parser(prog="python -m benchmarks.memory", description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="halfcheetah")
    p.add_argument("--preset", default="paper")
    p.add_argument("--backend", default="mjx")
    p.add_argument("--guide", default="sag", help="the guide compiled (reward adds a reward-model update)")
    p.add_argument("--denoiser_dtype", default="float32", help="float32 or bfloat16")
    p.add_argument("--wm_error_batch", type=int, default=None,
                   help="world-model error trajectories per evaluation (default: the preset's; 0: off, and the "
                        "replay keeps no simulator states)")
    p.add_argument("--num_seeds", default="1,2,4", help="comma-separated N at which the compile is analysed")
    p.add_argument("--phases", default=None, help="comma-separated phases to analyse (default: all; empty: none)")
    p.add_argument("--device_memory_gb", type=float, default=80.0, help="device memory, GB (1e9 bytes)")
    p.add_argument("--memory_fraction", type=float, default=0.75,
                   help="share of it JAX may use (0.75: JAX's GPU default, XLA_PYTHON_CLIENT_MEM_FRACTION)")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/memory_<platform>_<preset>.json)")
    a = p.parse_args(argv)
    try:
        ns = sorted({int(s) for s in a.num_seeds.split(",")})
    except ValueError:
        raise UsageError(f"--num_seeds={a.num_seeds!r}: give positive integers separated by commas, e.g. 1,2,4")
    if not ns or ns[0] < 1:
        raise UsageError(f"--num_seeds={a.num_seeds!r}: every N must be a positive integer")
    if not (math.isfinite(a.device_memory_gb) and a.device_memory_gb > 0):
        raise UsageError(f"--device_memory_gb={a.device_memory_gb:g} must be a positive number")
    if not 0 < a.memory_fraction <= 1:
        raise UsageError(f"--memory_fraction={a.memory_fraction:g} must be in (0, 1]")
    return a, ns


def _phases(arg, prog):
    """The phase names of --phases (None: every phase the run uses: wm_error only with
    wm_error_batch > 0). Raises UsageError."""
    used = [k for k in prog.phases if k != "wm_error" or prog.cfg.wm_error_batch > 0]
    if arg is None:
        return used
    names = [s for s in arg.split(",") if s]
    bad = [s for s in names if s not in used]
    if bad:
        raise UsageError(f"--phases={arg!r}: {', '.join(bad)} is not a phase of this run; choose from "
                          f"{', '.join(used)}")
    return names


def main(argv=None) -> int:
    try:
        a, ns = parse_args(argv)
    except UsageError as e:
        return fail(e)
    import jax
    from agdjax.config import ConfigError, make_config
    from agdjax.train import make_train
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR") and not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", os.environ.get(
            "AGDJAX_JAX_CACHE", os.path.expanduser("~/.cache/agdjax-jax")))
    try:
        cfg = make_config(a.task, a.preset, backend=a.backend, guide=a.guide, denoiser_dtype=a.denoiser_dtype,
                          wm_error_batch=a.wm_error_batch)
        phases = _phases(a.phases, make_train(cfg))
    except (ConfigError, UsageError) as e:
        return fail(e)
    platform = jax.default_backend()
    res = {"device": jax.devices()[0].device_kind, "platform": platform, "n_devices_used": 1, "task": cfg.task,
           "backend": cfg.backend, "preset": cfg.preset, "guide": cfg.guide, "denoiser_dtype": cfg.denoiser_dtype,
           "wm_error_batch": cfg.wm_error_batch, "num_seeds": ns, "device_memory_gb": a.device_memory_gb,
           "memory_fraction": a.memory_fraction,
           "date": time.strftime("%Y-%m-%d"), "command": "python -m benchmarks.memory " + " ".join(
               sys.argv[1:] if argv is None else argv),
           "note": ("analysis of the CPU compile: GPU layouts, fusions and library workspaces differ"
                    if platform == "cpu" else None)}
    res.update(measure(cfg, ns, phases, log=lambda s: print(s, file=sys.stderr, flush=True)))
    res["plan"] = plan(res, a.device_memory_gb * 1e9 * a.memory_fraction)
    out = a.out or os.path.join("benchmarks", "results", f"memory_{platform}_{cfg.preset}.json")
    write_result(res, out, table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
