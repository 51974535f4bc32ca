"""Markdown tables of one run's metrics.jsonl every 10k env steps, one table per swept value
(e.g. a `--guide_scale=0,3` sweep; an unswept run is one table): the eval return of each seed
and their mean, and the learner's and the world model's diagnostics (mean over the group's
seeds of the row logged at that env step).

    python docs/tools/member_table.py RUN_DIR [--every 10000] [--by guide_scale]
"""
import argparse
import collections
import json
import math

DIAG = [("eval_return_sampled", "eval sampled (mean)"), ("policy_std", "std"),
        ("policy_mean_abs", "mean abs μ"), ("critic_loss", "critic loss"),
        ("critic_explained_variance", "critic EV"), ("logprob_change", "mean abs Δ log π"), ("actor_lr", "actor lr"),
        ("action_guidance_scale", "delta"), ("guide_step_ratio", "guide step"), ("train_return", "train return"),
        ("imagined_advantage", "im. adv."), ("diffusion_loss", "diffusion loss"),
        ("wm_state_error_1", "wm s1"), ("wm_state_error_last", "wm s(H-1)"), ("wm_reward_error", "wm r"),
        ("wm_advantage_corr", "adv corr"), ("wm_action_cost_ratio", "action-cost ratio"),
        ("guide_state_shift", "guide shift"), ("guide_advantage_gain", "guide adv. gain")]


def finite(v):
    return isinstance(v, (int, float)) and math.isfinite(v)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--every", type=int, default=10000)
    ap.add_argument("--by", default="guide_scale")
    a = ap.parse_args()
    rows = [json.loads(line) for line in open(f"{a.run_dir}/metrics.jsonl")]
    groups = collections.defaultdict(lambda: collections.defaultdict(list))
    for r in rows:
        if r["env_steps"] % a.every == 0:
            groups[r.get(a.by)][r["env_steps"]].append(r)
    for g, by_step in sorted(groups.items(), key=lambda kv: str(kv[0])):
        seeds = sorted({r["seed"] for rs in by_step.values() for r in rs})
        cols = [name for key, name in DIAG if any(finite(r.get(key)) for rs in by_step.values() for r in rs)]
        keys = [key for key, name in DIAG if name in cols]
        print(f"\n{a.by}={g}\n" if g is not None else "\n(no sweep: every member)\n")
        print("| env steps | " + " | ".join(f"eval {s}" for s in seeds) + " | eval mean | " + " | ".join(cols) + " |")
        print("|---" * (len(seeds) + 2 + len(cols)) + "|")
        for step in sorted(by_step):
            rs = by_step[step]
            ev = {r["seed"]: r["eval_return"] for r in rs if finite(r.get("eval_return"))}
            cells = [f"{ev[s]:.1f}" if s in ev else "–" for s in seeds]
            cells.append(f"{sum(ev.values()) / len(ev):.1f}" if ev else "–")
            for k in keys:
                v = [r[k] for r in rs if finite(r.get(k))]
                cells.append(f"{sum(v) / len(v):.3g}" if v else "–")
            print(f"| {step:,} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
