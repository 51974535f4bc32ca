"""`python -m agdjax.evaluate RUN_DIR [--episodes=N]`: the policy of every valid checkpoint of
a run, evaluated with the mean action (`eval_return`, the reference's evaluation) and with
actions sampled from the policy (`eval_return_sampled`, the policy A2C trains), from the same
start states. Writes RUN_DIR/evaluations.json and prints a table.

Each checkpoint is evaluated at the key the run itself evaluated that env step with: a
checkpoint is saved before the chunk that starts at its env step, whose first iteration
evaluates at `split(state.key)[0]` (train.make_run_chunk). So at the run's `eval_episodes`
the mean-action return equals the logged `eval_return` of that step (up to the compile's
rounding; `logged_eval_return` is shown beside it) for every checkpoint but the final one,
which is saved after the run's last evaluation (its key has moved on). This also gives
`eval_return_sampled` to runs that predate it.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys


def checkpoint_evaluations(run_dir: str, episodes: int | None = None) -> dict:
    """{"rows": [{env_steps, seed, eval_return, eval_return_sampled, logged_eval_return
    (None where not logged), same_key (False for the final checkpoint)}], "episodes"} for
    every valid checkpoint of `run_dir`, oldest first.

    Raises FileNotFoundError without config.json, ValueError for a sweep, without a valid
    checkpoint, or for episodes < 1.
    """
    import jax
    import numpy as np
    from agdjax import checkpoint as ckpt_lib
    from agdjax import logging as runlog
    from agdjax.loop import _compiled
    from agdjax.wm_error import _config_from_dict

    if episodes is not None and episodes < 1:
        raise ValueError(f"--episodes={episodes}: must be >= 1")
    saved, seeds = runlog.read_config(run_dir)
    cfg = _config_from_dict(saved)
    if cfg.sweep:
        raise ValueError(f"{run_dir} is a sweep ({', '.join(k for k, _ in cfg.sweep)}); this command takes "
                         f"runs without a sweep")
    ev_cfg = dataclasses.replace(cfg, wm_error_batch=0, eval_episodes=episodes or cfg.eval_episodes)
    if cfg.model_free:
        from agdjax.model_free import make_model_free_train as build
    else:
        from agdjax.train import make_train as build
    phase = build(ev_cfg).phases["eval"]
    evaluate = jax.jit(jax.vmap(lambda s: phase(s, jax.random.split(s.key)[0])))
    logged = {}
    for r in runlog.read_rows(run_dir):
        if "eval_return" in r:
            logged[(r["seed"], r["env_steps"])] = r["eval_return"]
    ck = ckpt_lib.Checkpointer(os.path.join(run_dir, "checkpoints"), read_only=True)
    rows = []
    try:
        steps = ck.valid_steps()
        if not steps:
            raise ValueError(f"{run_dir} has no valid checkpoint (run it with --checkpoint_every)")
        abstract = _compiled(cfg, len(seeds)).abstract
        for step in steps:
            restored = ck.restore_step(step, abstract)
            env_steps = min(step * cfg.iters_per_chunk, cfg.n_iters) * cfg.env_steps_per_iter
            m = {k: np.asarray(v) for k, v in evaluate(restored.state).items()}
            for j, seed in enumerate(seeds):
                rows.append({"env_steps": env_steps, "seed": seed,
                             "eval_return": float(m["eval_return"][j]),
                             "eval_return_sampled": float(m["eval_return_sampled"][j]),
                             "logged_eval_return": logged.get((seed, env_steps)),
                             "same_key": not restored.driver.get("final", False)})
    finally:
        ck.close()
    return {"episodes": ev_cfg.eval_episodes, "rows": rows}


def _table(res) -> str:
    lines = [f"| env steps | seed | eval_return (mean action) | logged eval_return | eval_return_sampled |",
             "|---|---|---|---|---|"]
    for r in res["rows"]:
        logged = "–" if r["logged_eval_return"] is None else f"{r['logged_eval_return']:.1f}"
        if not r["same_key"]:
            logged += " (other key)"
        lines.append(f"| {r['env_steps']:,} | {r['seed']} | {r['eval_return']:.1f} | {logged} | "
                     f"{r['eval_return_sampled']:.1f} |")
    return "\n".join(lines)


def main(argv=None):
    """The command line; returns the exit status (2: bad input)."""
    import argparse
    p = argparse.ArgumentParser(prog="python -m agdjax.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--episodes", type=int, default=None,
                   help="episodes per evaluation (default: the run's eval_episodes, which reproduces its eval_return)")
    a = p.parse_args(argv)
    try:
        res = checkpoint_evaluations(a.run_dir, a.episodes)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    out = os.path.join(a.run_dir, "evaluations.json")
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(res, f, indent=1)
    os.replace(tmp, out)  # a kill leaves the old file or the new one, never half of one
    print(_table(res))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
