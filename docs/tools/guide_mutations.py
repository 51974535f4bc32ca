"""Issue 9, point 5: each of the six sampler/guide mutations that once passed
tests/test_guidance.py must now fail it. Applies one mutation at a time to the source, runs
the test file, restores the source (also on an error), and prints the failed tests.

    python docs/tools/guide_mutations.py        (from the repository root; ~5 min on 2 cores)

Do not run it while another test run or a program imports agdjax from this checkout. If it
is killed mid-way, `git checkout agdjax/` restores the mutated file.
"""
import subprocess, sys
M = {
 "sigma4->sigma2": ("agdjax/sampler.py", "step = g.guide_scale * sigma**4 * grad", "step = g.guide_scale * sigma**2 * grad"),
 "sag<->eag": ("agdjax/guidance.py", '    if guide == "sag":\n        return jax.nn.log_sigmoid(advantage).sum()\n    if guide == "eag":',
               '    if guide == "eag":\n        return jax.nn.log_sigmoid(advantage).sum()\n    if guide == "sag":'),
 "rewards normalised": ("agdjax/guidance.py", "reward_raw = jax.lax.stop_gradient(reward_stats.unnormalize(reward_norm[..., None])[..., 0])",
                        "reward_raw = jax.lax.stop_gradient(reward_norm)"),
 "terminal mask dropped": ("agdjax/guidance.py", "done = jax.lax.stop_gradient((terminal > 0.5).astype(jnp.float32))", "done = jnp.zeros_like(terminal)"),
 "policy at x_t": ("agdjax/sampler.py", "s_hat_raw = norm.obs.unnormalize(x0_hat[..., :obs_dim])", "s_hat_raw = norm.obs.unnormalize(x_t[..., :obs_dim])"),
 "action noise removed": ("agdjax/sampler.py", "a_prev = norm.action.normalize(a_raw) + sigma * jax.random.normal(k_a, a_t.shape)", "a_prev = norm.action.normalize(a_raw)"),
}
failed_to_fail = []
for name, (path, a, b) in M.items():
    src = open(path).read(); assert src.count(a) == 1, name
    open(path, "w").write(src.replace(a, b))
    try:
        p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-o", "addopts=", "tests/test_guidance.py"],
                           capture_output=True, text=True, timeout=900)
        last = [l for l in p.stdout.splitlines() if "passed" in l or "failed" in l][-1:]
        failed = [l.split(" ")[1] for l in p.stdout.splitlines() if l.startswith("FAILED")]
        print(f"{name}: {last} {failed[:4]}", flush=True)
        if not failed:
            failed_to_fail.append(name)
    finally:
        open(path, "w").write(src)
sys.exit(f"passed with a mutation: {failed_to_fail}" if failed_to_fail else 0)
