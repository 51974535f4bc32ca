"""What a seed vmap costs on XLA:CPU (issue 11): the denoiser-training phase (10 updates of
batch 256) and the imagination phase (the preset's default guide) of the paper preset, timed without vmap (one seed, as
the CLI runs it), under a seed vmap of 1, and with 2 seeds vmapped; best of 3, alternating.
Prints windows/s and transitions/s summed over the seeds of a call.

    python docs/tools/seed_vmap_cost.py
"""
import dataclasses, sys, time, json
import jax, jax.numpy as jnp
from agdjax import loop
from agdjax.config import make_config
base = make_config("halfcheetah", "paper", backend="positional")
cfg = dataclasses.replace(base, diffusion_steps_per_env_step=10 / base.env_steps_per_iter)
prog, init, _ = loop.compile_program(base, 2, jax.devices()[:1])
state2 = jax.block_until_ready(init(*loop.member_inputs(base, [{"seed": 0}, {"seed": 1}])))
keys2 = jax.random.split(jax.random.PRNGKey(1), 2)
state1 = jax.tree.map(lambda x: x[:1], state2); keys1 = keys2[:1]
st0 = jax.tree.map(lambda x: x[0], state2); k0 = keys2[0]
p = loop.make_train(cfg)
out = {}
for ph, work in (("diffusion", 10 * base.diffusion_batch), ("imagine", base.agent_batch * base.horizon)):
    f = p.phases[ph]
    if ph == "imagine": f = (lambda g: (lambda s, k: g(s, k).obs))(f)
    V = {"novmap": (jax.jit(f), (st0, k0), 1), "vmap1": (jax.jit(jax.vmap(f)), (state1, keys1), 1),
         "vmap2": (jax.jit(jax.vmap(f)), (state2, keys2), 2)}
    C = {k: (fn.lower(*a).compile(), a, n) for k, (fn, a, n) in V.items()}
    for k, (c, a, n) in C.items(): jax.block_until_ready(c(*a))
    best = {k: 1e9 for k in C}
    for r in range(3):
        for k, (c, a, n) in C.items():
            t0 = time.perf_counter(); jax.block_until_ready(c(*a)); best[k] = min(best[k], time.perf_counter() - t0)
    out[ph] = {k: work * C[k][2] / best[k] for k in C}
    print(ph, out[ph], flush=True)
