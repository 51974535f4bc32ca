"""The goals of issue 9, read off run directories: per group (seeds pooled as in
`python -m agdjax.compare`), the mean eval return at step 0 and at the end step, their
difference (goal: `sag` +1000), the seeds that end below their own 30k evaluation (goal: none
for `sag`), and the end means side by side (goal: `sag` >= `none` and >= model-free PPO).

    python docs/tools/issue9_goals.py RUN_DIR [RUN_DIR ...] [--end 100000] [--mid 30000]
        [--zero_scale_is_none]
"""
import argparse

import numpy as np

from agdjax.compare import group_runs, load_run, value_at


def goal_rows(groups, end: int, mid: int) -> list:
    """[(label, seeds, step-0 mean, end mean, end - step 0, [seeds below their mid value], n)]
    over the n seeds that have both a step-0 and an `end` evaluation (a seed with no evaluation
    at or before `mid` counts as not below)."""
    rows = []
    for g in groups:
        curves = {}
        for run_dir, seed, c, _ in g["members"]:
            if c and 0 in c and end in c:
                if seed in curves:
                    raise SystemExit(f"seed {seed} is in group {g['label']!r} twice (again in {run_dir}); "
                                     "pass each seed's run once")
                curves[seed] = c
        below = [s for s, c in curves.items() if (m := value_at(c, mid)) is not None and c[end] < m]
        m0 = float(np.mean([c[0] for c in curves.values()])) if curves else float("nan")
        me = float(np.mean([c[end] for c in curves.values()])) if curves else float("nan")
        rows.append((g["label"], sorted(curves), m0, me, me - m0, below, len(curves)))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dirs", nargs="+")
    ap.add_argument("--end", type=int, default=100_000)
    ap.add_argument("--mid", type=int, default=30_000)
    ap.add_argument("--zero_scale_is_none", action="store_true")
    a = ap.parse_args()
    groups = group_runs([load_run(d) for d in a.run_dirs], a.zero_scale_is_none)
    print(f"| group | seeds | step 0 | {a.end:,} | {a.end:,} − step 0 | seeds below their {a.mid:,} value |")
    print("|---|---|---|---|---|---|")
    for label, seeds, m0, me, diff, below, n in goal_rows(groups, a.end, a.mid):
        print(f"| {label} | {', '.join(map(str, seeds))} | {m0:.1f} | {me:.1f} | {diff:+.1f} | "
              f"{len(below)} of {n}" + (f" ({', '.join(map(str, below))})" if below else "") + " |")


if __name__ == "__main__":
    main()
