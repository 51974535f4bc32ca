"""What a seed vmap costs on XLA:CPU (issue 11): the denoiser-training phase (10 updates of
batch 256) and the imagination phase (the preset's default guide) of the paper preset, timed without vmap (one seed, as
the CLI runs it), under a seed vmap of 1, and with 2 seeds vmapped; best of 3, alternating.
Prints windows/s and transitions/s summed over the seeds of a call.

    python docs/tools/seed_vmap_cost.py
"""
import dataclasses
import time

import jax

from agdjax import loop
from agdjax.config import make_config


def main():
    base = make_config("halfcheetah", "paper", backend="positional")
    cfg = dataclasses.replace(base, diffusion_steps_per_env_step=10 / base.env_steps_per_iter)
    _, init, _ = loop.compile_program(base, 2, jax.devices()[:1])
    state2 = jax.block_until_ready(init(*loop.member_inputs(base, [{"seed": 0}, {"seed": 1}])))
    keys2 = jax.random.split(jax.random.PRNGKey(1), 2)
    first = lambda tree, n: jax.tree.map(lambda x: x[:n], tree)
    p = loop.make_train(cfg)
    imagine = lambda s, k: p.phases["imagine"](s, k).obs
    for name, f, work in (("diffusion", p.phases["diffusion"], 10 * base.diffusion_batch),
                          ("imagine", imagine, base.agent_batch * base.horizon)):
        variants = {"novmap": (jax.jit(f), (jax.tree.map(lambda x: x[0], state2), keys2[0]), 1),
                    "vmap1": (jax.jit(jax.vmap(f)), (first(state2, 1), keys2[:1]), 1),
                    "vmap2": (jax.jit(jax.vmap(f)), (state2, keys2), 2)}
        compiled = {k: (fn.lower(*a).compile(), a, n) for k, (fn, a, n) in variants.items()}
        for c, a, _ in compiled.values():
            jax.block_until_ready(c(*a))
        best = {k: float("inf") for k in compiled}
        for _ in range(3):  # alternating, so that a change of load hits every variant
            for k, (c, a, _) in compiled.items():
                t0 = time.perf_counter()
                jax.block_until_ready(c(*a))
                best[k] = min(best[k], time.perf_counter() - t0)
        print(name, {k: work * compiled[k][2] / best[k] for k in compiled}, flush=True)


if __name__ == "__main__":
    main()
