"""`python -m agdjax.compare RUN_DIR [RUN_DIR ...] [--out DIR] [--steps 10000,50000]
[--zero_scale_is_none] [--metric eval_return_sampled]`: a comparison report of several runs,
seeds pooled by their settings (of the mean-action eval return, or with `--metric` of the
sampled-action one).

Every seed of every run is one member. Members whose runs have the same configuration (the
whole `config` of config.json with the guide scale as resolved, `Config.c`) form a group,
labelled like `sag c=3`, `none` or `ppo (model-free)` (task, preset, backend and any other
field that differs between groups are added to the label). With `--zero_scale_is_none`, a
guide's members at c = 0 are seeds of `none` (the same sampler). Writes into `--out` (default: the
first run directory):

- `compare.md`: per group, the mean eval return over seeds with a 95% stratified-bootstrap
  confidence interval (rliable) at the chosen env steps and at the end, the interquartile mean
  (IQM) at the end, the area under the curve (each seed's mean eval return over its
  evaluation points), the world-model errors where logged, the number of seeds and the wall
  time from summary.json;
- `compare.png`: eval return vs env steps, the mean over seeds per group with its pointwise
  95% interval;
- `compare.json`: the same numbers, and the per-step curve of every group.

The value of a seed at env step S is its latest evaluation at or before S; seeds whose run
ended before S are left out there. One seed: the interval is the point.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from collections import defaultdict

import numpy as np

from agdjax.config import DEFAULT_GUIDE_SCALE, completed_config
from agdjax.logging import read_rows
from agdjax.wm_error import WM_METRICS as WM_KEYS  # the world-model columns

_BASE_FIELDS = ("task", "preset", "backend", "guide", "agent", "model_free", "guide_scale", "c")


# ---------------------------------------------------------------------------- reading runs
def resolved_c(cfg: dict) -> float:
    """The state-guide scale a run used: `c` in config.json, else guide_scale, else the default."""
    if cfg.get("c") is not None:
        return float(cfg["c"])
    if cfg.get("guide_scale") is not None:
        return float(cfg["guide_scale"])
    return DEFAULT_GUIDE_SCALE.get(cfg.get("guide", "none"), 0.0)


def _finite(v) -> bool:
    """A finite number (NaN rows and missing values are not)."""
    return isinstance(v, (int, float)) and math.isfinite(v)


def load_run(run_dir: str) -> dict:
    """{dir, config, seeds, rows, summary} of one run directory (summary {} if not written).

    Raises:
      FileNotFoundError: config.json or metrics.jsonl is missing.
    """
    for name in ("config.json", "metrics.jsonl"):
        if not os.path.isfile(os.path.join(run_dir, name)):
            raise FileNotFoundError(f"RUN_DIR {run_dir} has no {name}; pass run directories written by a run")
    with open(os.path.join(run_dir, "config.json")) as f:
        d = json.load(f)
    summary = {}
    try:
        with open(os.path.join(run_dir, "summary.json")) as f:
            summary = json.load(f)
    except (OSError, ValueError):
        pass
    cfg = completed_config(d["config"])  # e.g. a run before env_action existed ran 'raw'
    swept = list(cfg.pop("sweep", None) or {})  # names swept between the run's members
    if "guide_scale" not in swept:
        cfg["c"] = resolved_c(cfg)
    members = [{k: m[k] for k in ["seed"] + swept} for m in d.get("members", [])] or \
        [{"seed": s} for s in d["seeds"]]
    return {"dir": run_dir, "config": cfg, "seeds": list(d["seeds"]), "swept": swept, "members": members,
            "rows": read_rows(run_dir), "summary": summary}


def _member_id(run: dict, row_or_member: dict) -> tuple:
    """A member of a run: its seed and its swept values."""
    return (row_or_member["seed"],) + tuple(row_or_member.get(k) for k in run.get("swept", []))


def member_config(run: dict, member: dict) -> dict:
    """The configuration a member ran: the run's, with the member's swept values (a swept
    guide_scale is its `c`)."""
    cfg = dict(run["config"])
    for k in run.get("swept", []):
        cfg[k] = member[k]
        if k == "guide_scale":
            cfg["c"] = float(member[k])
    return cfg


# the evaluations a report can be made of (train.EVAL_METRICS): name -> its axis label
CURVE_METRICS = {"eval_return": "eval return", "eval_return_sampled": "eval return, sampled actions"}


def member_curves(run: dict, metric: str = "eval_return") -> dict:
    """{member id: {env_steps: value of `metric`}} of one run (member id: seed, then the swept
    values; metric: a CURVE_METRICS name); NaN/missing rows skipped."""
    out = {_member_id(run, m): {} for m in run.get("members", [{"seed": s} for s in run["seeds"]])}
    for r in run["rows"]:
        v = r.get(metric)
        if _finite(v):
            out.setdefault(_member_id(run, r), {})[int(r["env_steps"])] = float(v)
    return out


def member_wm(run: dict) -> dict:
    """{member id: {key: value at the last row where it was logged (finite)}} for WM_KEYS."""
    out = defaultdict(dict)
    for r in run["rows"]:
        for k in WM_KEYS:
            if _finite(r.get(k)):
                out[_member_id(run, r)][k] = float(r[k])
    return out


# ---------------------------------------------------------------------------- grouping
def _group_key(cfg: dict) -> tuple:
    """Runs with equal keys are seeds of one group: the config with c in place of guide_scale."""
    return tuple(sorted((k, json.dumps(v)) for k, v in cfg.items() if k != "guide_scale"))


def _base_label(cfg: dict) -> str:
    """`sag c=4`, `none`, `sag c=4 ppo`, `ppo (model-free)`, `oracle imagination (a2c)`."""
    if cfg.get("model_free"):
        return f"{cfg.get('agent', '?')} (model-free)"
    if cfg.get("imagination", "diffusion") != "diffusion":  # the learner never sees the world model
        return f"{cfg['imagination']} imagination ({cfg.get('agent', 'a2c')})"
    guide = cfg.get("guide", "none")
    label = guide if guide == "none" else f"{guide} c={cfg['c']:g}"
    if cfg.get("agent", "a2c") != "a2c":
        label += f" {cfg['agent']}"
    return label


def zero_scale_as_none(cfg: dict) -> dict:
    """The config with a guide of scale c = 0 written as `none`: the sampler is then the same
    (tests/test_guidance.py::test_guide_scale_zero_equals_none), so such members are seeds of
    the `none` group."""
    if cfg.get("guide", "none") != "none" and cfg.get("c") == 0:
        return {**cfg, "guide": "none"}
    return cfg


def group_runs(runs, zero_scale_is_none: bool = False, metric: str = "eval_return") -> list:
    """[{label, config, runs, members: [(run, seed, curve, wm)]}] in order of first appearance;
    runs whose configs differ only in guide_scale None vs its resolved value share a group. The
    members of a sweep go to the group of their swept values (config.json `members`). With
    `zero_scale_is_none`, members with c = 0 join the `none` group (zero_scale_as_none). The
    curves are of `metric` (member_curves)."""
    groups = {}
    for run in runs:
        curves, wm = member_curves(run, metric), member_wm(run)
        for m in run.get("members", [{"seed": s} for s in run["seeds"]]):
            cfg = member_config(run, m)
            if zero_scale_is_none:
                cfg = zero_scale_as_none(cfg)
            g = groups.setdefault(_group_key(cfg), {"config": cfg, "runs": [], "members": []})
            if not any(r is run for r in g["runs"]):
                g["runs"].append(run)
            mid = _member_id(run, m)
            g["members"].append((run["dir"], m["seed"], curves.get(mid, {}), wm.get(mid, {})))
    groups = list(groups.values())
    _label_groups(groups)
    return groups


def _varying(cfgs, fields) -> list:
    """The fields of `fields` whose values differ between the configs."""
    return [k for k in fields if len({json.dumps(c.get(k)) for c in cfgs}) > 1]


def _label_groups(groups):
    """Sets each group's label: the base label (guide and c, agent, model-free), then task,
    preset and backend where they differ between groups, then the other config fields that
    tell apart groups with the same label so far."""
    every = [g["config"] for g in groups]
    for g in groups:
        extra = [f"{k}={g['config'].get(k)}" for k in _varying(every, ("task", "preset", "backend"))]
        g["label"] = " ".join([_base_label(g["config"])] + extra)
    for label in {g["label"] for g in groups}:
        same = [g for g in groups if g["label"] == label]
        if len(same) > 1:
            fields = sorted({k for g in same for k in g["config"]} - set(_BASE_FIELDS))
            keys = _varying([g["config"] for g in same], fields)
            for g in same:
                g["label"] += "".join(f" {k}={g['config'].get(k)}" for k in keys) or \
                    f" ({os.path.basename(os.path.normpath(g['runs'][0]['dir']))})"


# ---------------------------------------------------------------------------- statistics
def interval(values, stat: str = "mean", reps: int = 5000, seed: int = 0):
    """(point, low, high): `stat` ("mean" or "iqm") of `values` (one per seed) with its 95%
    stratified-bootstrap confidence interval (rliable, percentile method). One value: the
    interval is the point; no value: NaNs."""
    values = np.asarray([v for v in values if _finite(v)], dtype=np.float64)
    if values.size == 0:
        return (math.nan,) * 3
    point, low, high = _bootstrap(values[:, None], stat, reps, seed)
    return float(point[0]), float(low[0]), float(high[0])


def _bootstrap(scores, stat: str, reps: int, seed: int):
    """(point [T], low [T], high [T]) of `stat` over the seeds (rows) of `scores` [n_seeds, T],
    each column on its own, with 95% stratified-bootstrap intervals (one rliable call: the
    same resamples for every column; "iqm" takes T = 1). One seed: the interval is the point."""
    if scores.shape[0] == 1:
        return scores[0], scores[0], scores[0]
    from rliable import library as rly
    from rliable import metrics
    # aggregate_mean of [runs, 1 task, T] is the [T] vector of per-step means; the IQM pools
    # everything it is given, so it takes one column only
    assert stat == "mean" or scores.shape[1] == 1
    func = {"mean": metrics.aggregate_mean, "iqm": lambda x: np.array([metrics.aggregate_iqm(x)])}[stat]
    with warnings.catch_warnings():  # arch's notice about the random_state argument rliable passes
        warnings.simplefilter("ignore", FutureWarning)
        point, ci = rly.get_interval_estimates({"x": scores[:, None, :]}, func, reps=reps,
                                               random_state=np.random.RandomState(seed))
    return point["x"], ci["x"][0], ci["x"][1]


def value_at(curve: dict, step: int):
    """A seed's latest evaluation at or before `step`; None if its run ended before `step`."""
    if not curve or max(curve) < step:
        return None
    return curve[max(s for s in curve if s <= step)]


def group_curve(group, reps: int, seed: int = 0) -> dict:
    """{env_steps: (mean, low, high, n)} over every step any member evaluated at: pointwise
    intervals, one bootstrap for all steps that the same seeds reach."""
    members = [curve for _, _, curve, _ in group["members"]]
    steps = sorted({s for curve in members for s in curve})
    by_members = defaultdict(list)  # which seeds count at a step -> those steps
    for step in steps:
        by_members[tuple(value_at(c, step) is not None for c in members)].append(step)
    out = {}
    for mask, at in by_members.items():
        scores = np.array([[value_at(c, s) for s in at] for c, m in zip(members, mask) if m])
        mean, low, high = _bootstrap(scores, "mean", reps, seed)
        out.update({s: (float(a), float(b), float(c), len(scores)) for s, a, b, c in zip(at, mean, low, high)})
    return dict(sorted(out.items()))


def group_stats(group, steps, reps: int, seed: int = 0) -> dict:
    """The numbers of one row of the report (see the module docstring)."""
    members = group["members"]
    finals = [c[max(c)] for _, _, c, _ in members if c]
    aucs = [float(np.mean(list(c.values()))) for _, _, c, _ in members if c]
    at = {}
    for step in steps:
        vals = [v for _, _, c, _ in members if (v := value_at(c, step)) is not None]
        at[step] = (*interval(vals, "mean", reps, seed), len(vals))
    wm = {k: float(np.mean(vs)) for k in WM_KEYS if (vs := [w[k] for *_, w in members if k in w])}
    walls = [sum(r["summary"].get(k, 0.0) for k in ("compile_s", "prefill_s", "train_s"))
             for r in group["runs"] if r["summary"].get("train_s") is not None]
    end_steps = sorted({max(c) for _, _, c, _ in members if c})
    return {"label": group["label"], "n_seeds": len(members), "n_runs": len(group["runs"]),
            "runs": [r["dir"] for r in group["runs"]], "at_steps": {str(k): v for k, v in at.items()},
            "end": (*interval(finals, "mean", reps, seed), len(finals)), "end_env_steps": end_steps,
            "iqm_end": interval(finals, "iqm", reps, seed), "auc": interval(aucs, "mean", reps, seed),
            "wm": wm, "wall_s": float(np.mean(walls)) if walls else None,
            "config": {k: group["config"].get(k) for k in _BASE_FIELDS if k != "guide_scale"}}


def default_steps(groups, n: int = 4) -> list:
    """n env steps at equal fractions of the shortest group's last evaluation, each rounded to
    an evaluation point of that group."""
    ends = [max(c) for g in groups for *_, c, _ in g["members"] if c]
    if not ends:
        return []
    end = min(ends)
    pts = sorted({s for g in groups for *_, c, _ in g["members"] for s in c if s <= end})
    want = [end * (i + 1) / (n + 1) for i in range(n)]
    return sorted({min(pts, key=lambda p: abs(p - w)) for w in want} - {0})


# ---------------------------------------------------------------------------- output
def _ci(t) -> str:
    """'mean [low, high]' of an interval tuple; '–' where there is no value."""
    if t is None or not _finite(t[0]):
        return "–"
    s = f"{t[0]:.1f} [{t[1]:.1f}, {t[2]:.1f}]"
    return s


def _hms(seconds) -> str:
    """h:mm:ss of a duration in seconds; "–" for None."""
    if seconds is None:
        return "–"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def render_markdown(stats, steps, reps: int, metric: str = "eval_return") -> str:
    """compare.md: the table of `metric` (a CURVE_METRICS name) and the world-model / wall-time table."""
    head = ["group", "seeds"] + [f"{s:,} steps" for s in steps] + ["end", "IQM end", "AUC"]
    lines = ["# Comparison", "",
             f"{CURVE_METRICS[metric].capitalize()} (`{metric}`): mean over seeds [95% stratified-bootstrap confidence interval, "
             f"rliable, {reps} resamples]. A seed's value at S env steps is its latest evaluation at "
             "or before S (seeds whose run ended before S are left out: `n=` says how many count). "
             "`end`: each seed's last evaluation; `IQM end`: interquartile mean of those; `AUC`: "
             "each seed's mean over its evaluation points. One seed: the interval is "
             "the point.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for st in stats:
        cells = [st["label"], str(st["n_seeds"])]
        for s in steps:
            t = st["at_steps"][str(s)]
            cells.append(_ci(t) + (f" (n={t[3]})" if t[3] != st["n_seeds"] else ""))
        ends = st["end_env_steps"]
        at_end = "" if not ends else f" @ {ends[0]:,}" if len(ends) == 1 else f" @ {ends[0]:,}–{ends[-1]:,}"
        cells += [_ci(st["end"]) + at_end, _ci(st["iqm_end"]), _ci(st["auc"])]
        lines.append("| " + " | ".join(cells) + " |")
    wm_keys = [k for k in WM_KEYS if any(k in st["wm"] for st in stats)]
    head = ["group"] + wm_keys + ["wall time (h:mm:ss)", "runs"]
    lines += ["", "World-model errors and advantage correlation (mean over seeds of the last logged "
              "value) and wall time "
              "(compile + prefill + training from summary.json, mean over the group's runs; the "
              "seeds of one run share it; a resumed run counts its last session only).", "",
              "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for st in stats:
        cells = [st["label"]] + [f"{st['wm'][k]:.4g}" if k in st["wm"] else "–" for k in wm_keys]
        cells += [_hms(st["wall_s"]), "<br>".join(f"`{d}`" for d in st["runs"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_groups(curves, path: str, title=None, metric: str = "eval_return"):
    """compare.png: `metric` (a CURVE_METRICS name) vs env steps, per group the mean over seeds
    and its 95% band.

    curves: [(label, n_seeds, {env_steps: (mean, low, high, n)})]."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, n, curve in curves:
        if not curve:
            continue
        x = np.array(list(curve))
        mean, lo, hi = (np.array([v[i] for v in curve.values()]) for i in range(3))
        line, = ax.plot(x, mean, label=f"{label} ({n} seed{'s' if n != 1 else ''})")
        ax.fill_between(x, lo, hi, alpha=0.2, color=line.get_color(), linewidth=0)
    ax.set_xlabel("env steps")
    ax.set_ylabel(f"{CURVE_METRICS[metric]} (mean, 95% CI)")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def compare(run_dirs, out_dir=None, steps=None, reps: int = 5000, seed: int = 0, title=None,
            zero_scale_is_none: bool = False, metric: str = "eval_return") -> dict:
    """Writes compare.md, compare.png and compare.json for `run_dirs` into `out_dir` (default:
    the first run directory); returns the JSON dict. `zero_scale_is_none`: see group_runs;
    `metric`: the evaluation compared, a CURVE_METRICS name.

    Raises:
      FileNotFoundError: a run directory lacks config.json or metrics.jsonl.
      ValueError: `metric` is not a CURVE_METRICS name, or a run never logged it.
    """
    if metric not in CURVE_METRICS:
        raise ValueError(f"metric={metric!r} is not one of {', '.join(CURVE_METRICS)}")
    runs = [load_run(d) for d in run_dirs]
    missing = [r["dir"] for r in runs if not any(_finite(row.get(metric)) for row in r["rows"])]
    if missing:
        raise ValueError(f"{', '.join(missing)} logged no {metric} (runs older than agdjax 2026-12-04 log eval_return only)")
    groups = group_runs(runs, zero_scale_is_none, metric)
    steps = sorted(steps) if steps else default_steps(groups)
    stats = [group_stats(g, steps, reps, seed) for g in groups]
    curves = [(g["label"], len(g["members"]), group_curve(g, reps, seed)) for g in groups]
    out_dir = out_dir or run_dirs[0]
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "compare.md"), "w") as f:
        f.write(render_markdown(stats, steps, reps, metric))
    plot_groups(curves, os.path.join(out_dir, "compare.png"), title, metric)
    result = {"metric": metric, "steps": steps, "reps": reps, "groups": stats,
              "curves": {label: {str(k): v for k, v in c.items()} for label, _, c in curves}}
    with open(os.path.join(out_dir, "compare.json"), "w") as f:
        json.dump(result, f, indent=1)
    return result


def _parse_steps(text):
    """--steps: comma-separated env steps -> [int]."""
    try:
        steps = [int(float(s)) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--steps={text!r}: give env steps as integers, e.g. 10000,50000")
    if any(s < 0 for s in steps):
        raise argparse.ArgumentTypeError(f"--steps={text!r}: env steps must be >= 0")
    return steps


def main(argv=None):
    """The command line; returns the exit status (2: a RUN_DIR is not a run directory)."""
    p = argparse.ArgumentParser(prog="python -m agdjax.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (config.json, metrics.jsonl)")
    p.add_argument("--out", default=None, help="directory for compare.md/.png/.json (default: the first RUN_DIR)")
    p.add_argument("--steps", type=_parse_steps, default=None,
                   help="env steps for the table, comma-separated (default: 4 points of the shortest run)")
    p.add_argument("--reps", type=int, default=5000, help="bootstrap resamples (default 5000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    p.add_argument("--title", default=None, help="figure title")
    p.add_argument("--metric", default="eval_return", choices=list(CURVE_METRICS),
                   help="the evaluation compared: the mean action (default, the reference's) or sampled actions")
    p.add_argument("--zero_scale_is_none", action="store_true",
                   help="pool members of a guide at scale c = 0 (e.g. a --guide_scale=0,3 sweep) into the none group")
    args = p.parse_args(argv)
    try:
        result = compare(args.run_dirs, args.out, args.steps, args.reps, args.seed, args.title,
                         args.zero_scale_is_none, args.metric)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = args.out or args.run_dirs[0]
    print(f"wrote {os.path.join(out, 'compare.md')}, compare.png, compare.json "
          f"({len(result['groups'])} groups: {', '.join(g['label'] for g in result['groups'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
