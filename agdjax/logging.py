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
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


class RunWriter:
    """Writes one run directory. Never overwrites an existing metrics file."""

    def __init__(self, logdir, cfg, seeds):
        self.logdir = logdir
        os.makedirs(logdir, exist_ok=True)
        self.metrics_path = os.path.join(logdir, "metrics.jsonl")
        with open(os.path.join(logdir, "config.json"), "w") as f:
            json.dump({"config": cfg.to_dict(), "seeds": list(seeds)}, f, indent=2)
        self.rows = []
        self.label = f"{cfg.task} {cfg.guide}"
        self._tb = None
        try:
            from tensorboardX import SummaryWriter
            self._tb = {s: SummaryWriter(os.path.join(logdir, "tb", f"seed_{s}")) for s in seeds}
        except ImportError:  # pragma: no cover - tensorboardX is a dependency
            pass

    def write_rows(self, rows):
        with open(self.metrics_path, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
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
        with open(os.path.join(self.logdir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        if self._tb:
            for tb in self._tb.values():
                tb.close()


class Progress:
    """tqdm bar over env steps (per seed) with env steps/s and ETA."""

    def __init__(self, total, enabled=True):
        self.enabled = enabled
        self.bar = None
        if enabled:
            from tqdm import tqdm
            self.bar = tqdm(total=total, unit="step", file=sys.stderr, dynamic_ncols=True,
                            desc="env steps", mininterval=0)
        self.n = 0

    def update(self, env_steps, sps, last_eval):
        if self.bar is not None:
            self.bar.update(env_steps - self.n)
            self.bar.set_postfix(sps=f"{sps:.0f}", eval=f"{last_eval:.1f}")
        self.n = env_steps

    def close(self):
        if self.bar is not None:
            self.bar.close()
