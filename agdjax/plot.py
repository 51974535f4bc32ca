"""`python -m agdjax.plot RUN_DIR [RUN_DIR ...] [--out PATH] [--title TITLE]`: the eval-return
curves of several runs in one figure (mean ± std over each run's seeds), one legend entry per
run, labelled "<task> <guide>" from the run's config.json (with the agent / model-free /
directory name added where that is needed to tell runs apart).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from agdjax.logging import plot_runs, read_rows


def run_label(run_dir: str) -> str:
    with open(os.path.join(run_dir, "config.json")) as f:
        cfg = json.load(f)["config"]
    label = f"{cfg.get('task', '?')} {cfg.get('guide', '?')}"
    if cfg.get("model_free"):
        label += " model-free"
    if cfg.get("agent", "a2c") != "a2c":
        label += f" {cfg['agent']}"
    return label


def labelled_runs(run_dirs):
    """[(label, rows)] for the run directories; duplicate labels get the directory name."""
    labels = [run_label(d) for d in run_dirs]
    out = []
    for d, label in zip(run_dirs, labels):
        if labels.count(label) > 1:
            label = f"{label} ({os.path.basename(os.path.normpath(d))})"
        out.append((label, read_rows(d)))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m agdjax.plot", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (hold config.json, metrics.jsonl)")
    p.add_argument("--out", default="curves.png", help="PNG to write (default: curves.png)")
    p.add_argument("--title", default=None, help="figure title")
    args = p.parse_args(argv)
    for d in args.run_dirs:
        for name in ("config.json", "metrics.jsonl"):
            if not os.path.isfile(os.path.join(d, name)):
                print(f"error: RUN_DIR {d} has no {name}; pass run directories written by a run",
                      file=sys.stderr)
                return 2
    runs = labelled_runs(args.run_dirs)
    if not any("eval_return" in r for _, rows in runs for r in rows):
        print("error: none of the runs has an eval_return row yet; nothing to plot", file=sys.stderr)
        return 2
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    plot_runs(runs, args.out, title=args.title)
    print(f"wrote {args.out} ({len(runs)} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
