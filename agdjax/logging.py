"""Run directory: config.json, metrics.jsonl, summary.json, TensorBoard events, curve.png;
progress (a bar on a terminal, plain lines otherwise); the console's third-party logging.
Side effects only; called between compiled chunks."""
from __future__ import annotations

import contextlib
import io
import json
import logging as pylogging
import math
import os
import sys
import time
from collections import defaultdict

import numpy as np


def eval_curve(rows):
    """{env_steps: [eval_return per seed]} from metric rows, sorted by env steps."""
    by_step = defaultdict(list)
    for r in rows:
        if "eval_return" in r:
            by_step[r["env_steps"]].append(r["eval_return"])
    return dict(sorted(by_step.items()))


def summarize(rows, seeds, members=None):
    """summary.json's numbers: the first and last evaluation's eval return (mean, std over
    members, per member in member order), and for a sweep the members and the final mean per
    setting. members: config.members (default: one per seed)."""
    members = members if members is not None else [{"seed": s} for s in seeds]
    out = {"seeds": list(seeds)}
    swept = _swept(members)
    if swept:
        out["members"] = members
    curve = eval_curve(rows)
    if not curve:
        return out
    steps = list(curve)
    first, last = curve[steps[0]], curve[steps[-1]]
    out.update({
        "initial_env_steps": int(steps[0]),
        "initial_eval_return_mean": float(np.mean(first)),
        "initial_eval_return_std": float(np.std(first)),
        "initial_eval_return_per_seed": [float(x) for x in first],
        "final_env_steps": int(steps[-1]),
        "final_eval_return_mean": float(np.mean(last)),
        "final_eval_return_std": float(np.std(last)),
        "final_eval_return_per_seed": [float(x) for x in last],
    })
    if swept and len(last) == len(members):
        settings = {}
        for m, v in zip(members, last):
            settings.setdefault(tuple(m[k] for k in swept), []).append(float(v))
        out["final_eval_return_per_setting"] = [
            {**dict(zip(swept, key)), "mean": float(np.mean(v)), "std": float(np.std(v)), "n": len(v)}
            for key, v in settings.items()]
    return out


def plot_runs(runs, path, title=None):
    """Eval return vs env steps, mean ± std over seeds, one line per run.

    runs: list of (label, rows). Writes a PNG to `path`.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, rows in runs:
        curve = eval_curve(rows)
        if not curve:
            continue
        x = np.array(list(curve))
        y = [np.array(v) for v in curve.values()]
        mean = np.array([v.mean() for v in y])
        std = np.array([v.std() for v in y])
        n = max(len(v) for v in y)
        ax.plot(x, mean, label=f"{label} ({n} seeds)")
        ax.fill_between(x, mean - std, mean + std, alpha=0.25)
    ax.set_xlabel("env steps")
    ax.set_ylabel("eval return")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def read_rows(run_dir):
    """The rows of run_dir/metrics.jsonl (a last line still being written is left out)."""
    return [json.loads(line) for line in _complete_lines(os.path.join(run_dir, "metrics.jsonl"))
            if line.strip()]


def _complete_lines(path):
    """The complete (newline-terminated) lines of `path`; a partial last line is dropped."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        lines = f.readlines()
    return [line for line in lines if line.endswith("\n")]


def count_rows(run_dir):
    """Number of complete rows in run_dir/metrics.jsonl (0 when there is none)."""
    return len(_complete_lines(os.path.join(run_dir, "metrics.jsonl")))


def _atomic_write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_config(run_dir):
    """(config dict, seeds) from run_dir/config.json."""
    with open(os.path.join(run_dir, "config.json")) as f:
        d = json.load(f)
    return d["config"], d["seeds"]


def config_record(cfg, seeds, members) -> dict:
    """config.json: the config with the guide scale as resolved (`c`, the list of values in a
    guide-scale sweep), the seeds, and every member's seed and SWEEPABLE values as used."""
    from agdjax.config import member_hparams
    hp = member_hparams(cfg, members)
    c = dict(cfg.sweep).get("guide_scale", cfg.c)
    return {"config": {**cfg.to_dict(), "c": list(c) if isinstance(c, tuple) else c}, "seeds": list(seeds),
            "members": [{**m, **{k: v[i] for k, v in hp.items()}} for i, m in enumerate(members)]}


def _swept(members) -> list:
    """The names a sweep varies between `members` (config.members): every key but the seed."""
    return [k for k in members[0] if k != "seed"] if members else []


def _member_key(row_or_member):
    """A row's or member's identity: its seed and swept values (the keys of a config.members entry
    other than metrics); rows carry exactly those before `env_steps`."""
    out = []
    for k, v in row_or_member.items():
        if k == "env_steps":
            break
        out.append((k, v))
    return tuple(out)


def _tb_name(member):
    """TensorBoard directory of a member: seed_<s>, then _<name>_<value> per swept value."""
    return "seed_" + "_".join(str(member["seed"]) if k == "seed" else f"{k}_{v!r}" for k, v in member.items())


class RunWriter:
    """Writes one run directory. A new run writes config.json at once; metrics.jsonl is never
    overwritten, except by a resumed run (`keep_rows` = rows to keep): that one changes
    nothing in the directory until its first new rows are written, and then replaces
    metrics.jsonl whole (the first `keep_rows` rows byte for byte, then the new ones;
    tmp file + os.replace) and config.json. TensorBoard files are opened with the first rows."""

    def __init__(self, logdir, cfg, seeds, members=None, keep_rows=None):
        self.logdir, self.seeds = logdir, list(seeds)
        self.members = members if members is not None else [{"seed": s} for s in self.seeds]
        self.config_text = json.dumps(config_record(cfg, self.seeds, self.members), indent=2)
        self.metrics_path = os.path.join(logdir, "metrics.jsonl")
        self.purge_step, self._kept = None, None
        if keep_rows is None:
            if os.path.exists(self.metrics_path):
                raise FileExistsError(f"{self.metrics_path} exists; resume the run or use a new logdir")
            os.makedirs(logdir, exist_ok=True)
            _atomic_write(os.path.join(logdir, "config.json"), self.config_text)
            self.rows = []
        else:
            lines = _complete_lines(self.metrics_path)
            if len(lines) < keep_rows:
                raise ValueError(f"{self.metrics_path} holds {len(lines)} rows, fewer than the "
                                 f"{keep_rows} of the checkpoint")
            self._kept = "".join(lines[:keep_rows])  # written with the first new rows
            self.rows = [json.loads(line) for line in lines[:keep_rows]]
            # hides events of a resumed run's replaced rows from TensorBoard
            self.purge_step = (self.rows[-1]["env_steps"] + 1) if self.rows else 0
        self.label = f"{cfg.task} {cfg.guide}"
        self._tb = None

    def _open_tb(self):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:  # pragma: no cover - tensorboardX is a dependency
            return {}
        return {_member_key(m): SummaryWriter(os.path.join(self.logdir, "tb", _tb_name(m)),
                                             purge_step=self.purge_step) for m in self.members}

    def write_rows(self, rows):
        """Appends `rows` to metrics.jsonl (and TensorBoard, curve.png), durably (fsync)."""
        text = "".join(json.dumps(r) + "\n" for r in rows)
        if self._kept is not None:  # a resumed run's first rows: switch over to the new files
            _atomic_write(self.metrics_path, self._kept + text)
            _atomic_write(os.path.join(self.logdir, "config.json"), self.config_text)
            self._kept = None
        else:
            with open(self.metrics_path, "a") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        self.rows.extend(rows)
        if self._tb is None:
            self._tb = self._open_tb()
        for r in rows:
            tb = self._tb.get(_member_key(r))
            for k, v in r.items():
                if tb is not None and k not in self.members[0] and k != "env_steps" and isinstance(v, float) \
                        and math.isfinite(v):
                    tb.add_scalar(k, v, r["env_steps"])
        if any("eval_return" in r for r in rows):
            plot_runs(self._curves(), os.path.join(self.logdir, "curve.png"))

    def _curves(self):
        """[(label, rows)] for curve.png: the run, or one line per setting of a sweep."""
        swept = _swept(self.members)
        if not swept:
            return [(self.label, self.rows)]
        by_setting = {}
        for r in self.rows:
            by_setting.setdefault(tuple(r[k] for k in swept), []).append(r)
        return [(self.label + "".join(f" {k}={v:g}" for k, v in zip(swept, key)), rs)
                for key, rs in by_setting.items()]

    def finish(self, summary):
        if self._kept is not None:
            self.write_rows([])
        _atomic_write(os.path.join(self.logdir, "summary.json"), json.dumps(summary, indent=2))
        self.close()

    def close(self):
        if self._tb:
            for tb in self._tb.values():
                tb.close()
        self._tb = None


def _hms(seconds) -> str:
    """hh:mm:ss of a duration in seconds."""
    if not math.isfinite(seconds):
        return "--:--:--"
    s = int(round(seconds))
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    """Progress over env steps (per seed). On a terminal (stdout is a TTY): a tqdm bar with
    env steps/s and ETA. Otherwise (a log file, a batch job): a plain line through `print_fn`
    after a chunk when at least `every_s` seconds passed since the last line (so at most one
    line per chunk), and one at the end (`close`):
    `env steps X/Y (p%), Z env steps/s, eval return R (mean over seeds, last evaluation), ETA hh:mm:ss`
    (env steps/s and ETA from the average rate since this progress started)."""

    def __init__(self, total, enabled=True, initial=0, every_s=30.0, tty=None, print_fn=None,
                 clock=time.monotonic):
        self.enabled, self.total, self.every_s, self.clock = enabled, total, every_s, clock
        self.tty = sys.stdout.isatty() if tty is None else tty
        self.print_fn = print_fn or (lambda line: print(line, flush=True))
        self.bar = None
        if enabled and self.tty:
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=initial, unit="step", file=sys.stderr,
                            dynamic_ncols=True, desc="env steps", mininterval=0)
        self.n = self.initial = initial
        self.last_eval, self.unprinted = math.nan, False
        self.t_start = self.t_last = clock()

    def update(self, env_steps, sps, last_eval):
        """After a chunk: env steps done (per seed), that chunk's env steps/s, last mean eval return."""
        if self.bar is not None:
            self.bar.update(env_steps - self.n)
            self.bar.set_postfix(sps=f"{sps:.0f}", eval=f"{last_eval:.1f}")
        self.n, self.last_eval, self.unprinted = env_steps, last_eval, True
        if self.enabled and not self.tty and self.clock() - self.t_last >= self.every_s:
            self._print()

    def _print(self):
        self.t_last = self.clock()
        self.unprinted = False
        self.print_fn(self.line(self.t_last, self.last_eval))

    def line(self, now, last_eval) -> str:
        """The plain progress line at time `now`."""
        rate = (self.n - self.initial) / (now - self.t_start) if now > self.t_start else math.nan
        eta = (self.total - self.n) / rate if rate > 0 else (0.0 if self.n >= self.total else math.nan)
        ev = f"{last_eval:.1f}" if math.isfinite(last_eval) else "n/a"
        return (f"env steps {self.n:,}/{self.total:,} ({100 * self.n / max(self.total, 1):.0f}%), "
                f"{rate:,.0f} env steps/s, eval return {ev} (mean over seeds, last evaluation), "
                f"ETA {_hms(eta)}")

    def close(self):
        """Ends the bar; without a terminal, prints the last state unless it was just printed."""
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and not self.tty and self.unprinted:
            self._print()


# ---------------------------------------------------------------------------- console logging
LOG_LEVELS = {"warning": pylogging.WARNING, "info": pylogging.INFO, "debug": pylogging.DEBUG}
# lines printed by mujoco.mjx at import when the optional NVIDIA Warp backend is not installed
_WARP_LINES = ("Failed to import warp:", "Failed to import mujoco_warp:")
# MuJoCo's deprecation notice for an attribute of Brax's own model files (halfcheetah.xml)
_MUJOCO_WARNINGS_DROPPED = ("compiler attribute 'settotalmass' is deprecated",)


class _DropLines(io.TextIOBase):
    """A text stream that passes every line to `stream` but those starting with `prefixes`."""

    def __init__(self, stream, prefixes):
        self.stream, self.prefixes, self.buf = stream, prefixes, ""

    def write(self, text):
        self.buf += text
        *lines, self.buf = self.buf.split("\n")
        for line in lines:
            if not line.startswith(self.prefixes):
                self.stream.write(line + "\n")
        return len(text)

    def flush(self):
        if self.buf and not self.buf.startswith(self.prefixes):
            self.stream.write(self.buf)
        self.buf = ""
        self.stream.flush()


def _mujoco_warning(msg):
    """MuJoCo's warning handler: as MuJoCo's own (a line on stderr), less the notices of
    `_MUJOCO_WARNINGS_DROPPED`."""
    if not any(m in msg for m in _MUJOCO_WARNINGS_DROPPED):
        print(f"WARNING: {msg}", file=sys.stderr, flush=True)


def set_console_logging(level: str = "warning"):
    """Console logging of third-party libraries. `level` ("warning", "info", "debug"): absl's
    verbosity and the Python loggers of orbax and etils (Orbax logs every checkpoint step at
    INFO). At "warning" also: the "Failed to import warp" lines that `import mujoco.mjx`
    prints and MuJoCo's 'settotalmass' deprecation notice are dropped; every other warning
    and error still shows."""
    from absl import logging as absl_logging
    absl_logging.set_verbosity(level)
    for name in ("orbax", "etils"):
        pylogging.getLogger(name).setLevel(LOG_LEVELS[level])
    if level != "warning":
        return
    import mujoco
    mujoco.set_mju_user_warning(_mujoco_warning)
    if "mujoco.mjx" not in sys.modules:
        with contextlib.redirect_stdout(_DropLines(sys.stdout, _WARP_LINES)) as out:
            import mujoco.mjx  # noqa: F401
            out.flush()
