"""What the state guide leaves in the samples, at several scales c, on one checkpoint.

For each (guide, c), imagines trajectories from the same replayed start states and noise as
the unguided sampler (guide none), and prints `wm_error.guide_effect` (the state shift in
normalised units, the change of the mean one-step advantage under the run's critic), the
mean advantage, the mean log sigmoid(A) (what `sag` raises), the mean imagined reward and
`guide_step_ratio`. Seed 0 of the run (its first member); negative c pushes the other way.
`--last_row` adds each (guide, c) with `Config.guide_last_row` (the guide also moves row H-1).

    python docs/tools/guide_probe.py RUN_DIR [--scales=-30,3,30,300] [--guides=sag,eag] [--batch=256] [--last_row]
"""
import argparse
import dataclasses

import jax

from agdjax import replay as rb
from agdjax import train, wm_error
from agdjax.guidance import one_step_advantage


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--scales", default="-30,3,30,300")
    ap.add_argument("--guides", default="sag,eag")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--last_row", action="store_true")
    a = ap.parse_args()
    cfg, seeds, restored = wm_error.load_run(a.run_dir)
    state = jax.tree.map(lambda x: x[0], restored.state)
    k_s, k_im = jax.random.split(jax.random.PRNGKey(0))
    s0, _ = rb.sample_starts(state.replay, k_s, a.batch)
    base_setup = train.make_setup(dataclasses.replace(cfg, guide="none", guide_scale=None))
    imagine = lambda setup: jax.jit(lambda st: train.diffusion_imagine(setup, st, k_im, s0))(state)
    base = imagine(base_setup)
    value = lambda o: base_setup.mods.critic.apply(state.agent.critic, o)

    print(f"{a.run_dir}: checkpoint at env step {restored.driver.get('env_steps')}, seed {seeds[0]}, "
          f"{a.batch} trajectories")
    print("| guide | c | last row | state shift (normalised) | advantage gain | mean A | mean log sigmoid(A) "
          "| mean reward | guide_step_ratio |\n|---|---|---|---|---|---|---|---|---|")
    rows = [("none", 0.0, False, base)]
    for last_row in (False, True) if a.last_row else (False,):
        for g in a.guides.split(","):
            for c in (float(x) for x in a.scales.split(",")):
                setup = train.make_setup(dataclasses.replace(cfg, guide=g, guide_scale=c, guide_last_row=last_row))
                rows.append((g, c, last_row, imagine(setup)))
    for g, c, last_row, im in rows:
        e = wm_error.guide_effect(state.norm.obs.normalize, value, cfg.gamma, im.obs, im.reward, im.terminal,
                                  base.obs, base.reward, base.terminal)
        adv = one_step_advantage(value, im.obs, im.reward, im.terminal, cfg.gamma)
        print(f"| {g} | {c:g} | {'yes' if last_row else 'no'} | {float(e['guide_state_shift']):.4g} | {float(e['guide_advantage_gain']):.4g} "
              f"| {float(adv.mean()):.4f} | {float(jax.nn.log_sigmoid(adv).mean()):.4f} "
              f"| {float(im.reward[:, :-1].mean()):.4f} | {float(im.guide_step_ratio):.3f} |")


if __name__ == "__main__":
    main()
