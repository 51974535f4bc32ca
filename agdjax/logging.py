"""Run directory: config.json, metrics.jsonl, summary.json, TensorBoard events, curve.png;
and the progress bar. Side effects only; called between compiled chunks."""
from __future__ import annotations

import json
import math
import os
import sys
from collections import defaultdict

import numpy as np


def eval_curve(rows):
    """{env_steps: [eval_return per seed]} from metric rows, sorted by env steps."""
    by_step = defaultdict(list)
    for r in rows:
        if "eval_return" in r:
            by_step[r["env_steps"]].append(r["eval_return"])
    return dict(sorted(by_step.items()))


def summarize(rows, seeds):
    curve = eval_curve(rows)
    if not curve:
        return {"seeds": list(seeds)}
    steps = list(curve)
    first, last = curve[steps[0]], curve[steps[-1]]
    return {
        "seeds": list(seeds),
        "initial_eval_return_mean": float(np.mean(first)),
        "final_env_steps": int(steps[-1]),
        "final_eval_return_mean": float(np.mean(last)),
        "final_eval_return_std": float(np.std(last)),
        "final_eval_return_per_seed": [float(x) for x in last],
    }


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


class RunWriter:
    """Writes one run directory. Never overwrites an existing metrics file, except that a
    resumed run (`keep_rows` = rows to keep) cuts metrics.jsonl back to its first `keep_rows`
    rows, byte for byte, and continues after them."""

    def __init__(self, logdir, cfg, seeds, keep_rows=None):
        self.logdir = logdir
        os.makedirs(logdir, exist_ok=True)
        self.metrics_path = os.path.join(logdir, "metrics.jsonl")
        purge_step = None
        if keep_rows is None:
            if os.path.exists(self.metrics_path):
                raise FileExistsError(f"{self.metrics_path} exists; resume the run or use a new logdir")
            self.rows = []
        else:
            lines = _complete_lines(self.metrics_path)
            if len(lines) < keep_rows:
                raise ValueError(f"{self.metrics_path} holds {len(lines)} rows, fewer than the "
                                 f"{keep_rows} of the checkpoint")
            lines = lines[:keep_rows]
            _atomic_write(self.metrics_path, "".join(lines))
            self.rows = [json.loads(line) for line in lines]
            purge_step = (self.rows[-1]["env_steps"] + 1) if self.rows else 0
        _atomic_write(os.path.join(logdir, "config.json"),
                      json.dumps({"config": cfg.to_dict(), "seeds": list(seeds)}, indent=2))
        self.label = f"{cfg.task} {cfg.guide}"
        self._tb = None
        try:
            from tensorboardX import SummaryWriter
            # purge_step hides events of a resumed run's replaced rows from TensorBoard.
            self._tb = {s: SummaryWriter(os.path.join(logdir, "tb", f"seed_{s}"), purge_step=purge_step)
                        for s in seeds}
        except ImportError:  # pragma: no cover - tensorboardX is a dependency
            pass

    def write_rows(self, rows):
        with open(self.metrics_path, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.rows.extend(rows)
        if self._tb:
            for r in rows:
                tb = self._tb[r["seed"]]
                for k, v in r.items():
                    if k not in ("seed", "env_steps") and isinstance(v, float) and math.isfinite(v):
                        tb.add_scalar(k, v, r["env_steps"])
        if any("eval_return" in r for r in rows):
            plot_runs([(self.label, self.rows)], os.path.join(self.logdir, "curve.png"))

    def finish(self, summary):
        _atomic_write(os.path.join(self.logdir, "summary.json"), json.dumps(summary, indent=2))
        self.close()

    def close(self):
        if self._tb:
            for tb in self._tb.values():
                tb.close()
            self._tb = None


class Progress:
    """tqdm bar over env steps (per seed) with env steps/s and ETA."""

    def __init__(self, total, enabled=True, initial=0):
        self.enabled = enabled
        self.bar = None
        if enabled:
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=initial, unit="step", file=sys.stderr,
                            dynamic_ncols=True, desc="env steps", mininterval=0)
        self.n = initial

    def update(self, env_steps, sps, last_eval):
        if self.bar is not None:
            self.bar.update(env_steps - self.n)
            self.bar.set_postfix(sps=f"{sps:.0f}", eval=f"{last_eval:.1f}")
        self.n = env_steps

    def close(self):
        if self.bar is not None:
            self.bar.close()
