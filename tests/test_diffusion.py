"""Known answers for the schedule, posterior, in-painting and x0 loss."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agdjax import diffusion


@pytest.mark.parametrize("tau", [1.0, 0.1])
def test_schedule_endpoints_and_monotone(tau):
    s = diffusion.cosine_schedule(128, tau)
    ab = np.asarray(s.alpha_bar)
    assert ab.shape == (128,)
    assert np.all(np.diff(ab) < 0), "alpha_bar must decrease strictly"
    assert 0.99 < ab[0] <= 1.0
    assert ab[-1] < 1e-3
    assert np.all(np.asarray(s.betas) <= 0.999) and np.all(np.asarray(s.betas) > 0)
    np.testing.assert_allclose(ab, np.cumprod(1 - np.asarray(s.betas)), rtol=1e-5)


def test_temperature_changes_schedule():
    a = np.asarray(diffusion.cosine_schedule(32, 1.0).alpha_bar)
    b = np.asarray(diffusion.cosine_schedule(32, 0.1).alpha_bar)
    # alpha_bar ∝ cos(.)^(2 tau): a lower temperature keeps more signal at every step
    assert np.all(b[:-1] > a[:-1])


def test_posterior_matches_closed_form():
    s = diffusion.cosine_schedule(16, 1.0)
    key = jax.random.PRNGKey(0)
    x0 = jax.random.normal(key, (3, 4, 5))
    xt = jax.random.normal(jax.random.PRNGKey(1), (3, 4, 5))
    t = jnp.array([0, 7, 15])
    mean, std = diffusion.posterior(s, x0, xt, t)
    betas = np.asarray(s.betas, np.float64)
    ab = np.cumprod(1 - betas)
    for i, ti in enumerate([0, 7, 15]):
        ab_prev = 1.0 if ti == 0 else ab[ti - 1]
        m = (np.sqrt(ab_prev) * betas[ti] / (1 - ab[ti])) * np.asarray(x0[i]) + \
            (np.sqrt(1 - betas[ti]) * (1 - ab_prev) / (1 - ab[ti])) * np.asarray(xt[i])
        var = betas[ti] * (1 - ab_prev) / (1 - ab[ti])
        np.testing.assert_allclose(np.asarray(mean[i]), m, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(float(std[i, 0, 0]) ** 2, max(var, 1e-20), rtol=1e-4, atol=1e-12)
    # at t = 0 the posterior mean is x0 itself
    np.testing.assert_allclose(np.asarray(mean[0]), np.asarray(x0[0]), atol=1e-5)


def test_q_sample_statistics():
    s = diffusion.cosine_schedule(16, 1.0)
    x0 = jnp.ones((20000, 1, 1)) * 2.0
    t = jnp.full((20000,), 8)
    xt = diffusion.q_sample(s, x0, t, jax.random.normal(jax.random.PRNGKey(0), x0.shape))
    ab = float(s.alpha_bar[8])
    assert abs(float(xt.mean()) - 2.0 * np.sqrt(ab)) < 0.03
    assert abs(float(xt.std()) - np.sqrt(1 - ab)) < 0.03


def test_x0_loss_ignores_s0_and_is_zero_for_perfect_denoiser():
    s = diffusion.cosine_schedule(8, 1.0)
    x0 = jax.random.normal(jax.random.PRNGKey(0), (4, 3, 5))
    acts = jnp.zeros((4, 3, 2))
    obs_dim = 3
    perfect = lambda xt, a, t: x0
    assert float(diffusion.x0_loss(perfect, s, x0, acts, jax.random.PRNGKey(1), obs_dim)) < 1e-12
    # wrong only on s_0: in-painting + mask make the loss zero
    wrong_s0 = lambda xt, a, t: x0.at[:, 0, :obs_dim].add(5.0)
    assert float(diffusion.x0_loss(wrong_s0, s, x0, acts, jax.random.PRNGKey(1), obs_dim)) < 1e-12
    # wrong by 1 everywhere else: loss 1
    off = lambda xt, a, t: x0 + 1.0
    np.testing.assert_allclose(float(diffusion.x0_loss(off, s, x0, acts, jax.random.PRNGKey(1), obs_dim)), 1.0, rtol=1e-5)


def test_bfloat16_denoiser_keeps_fp32_params_output_and_gradients():
    """The bf16 option changes only the matmul operands: params, output and gradients stay
    float32, the prediction agrees with the fp32 network to bf16 rounding, and the HLO's dots
    take bf16 operands with an f32 result."""
    from agdjax.networks import ResidualMLPDenoiser
    x_t = jax.random.normal(jax.random.PRNGKey(0), (8, 4, 7))
    acts = jax.random.normal(jax.random.PRNGKey(1), (8, 4, 2))
    t = jnp.arange(8)
    f32, bf16 = ResidualMLPDenoiser(64, 2), ResidualMLPDenoiser(64, 2, dtype=jnp.bfloat16)
    params = f32.init(jax.random.PRNGKey(2), x_t, acts, t)
    assert jax.tree.structure(params) == jax.tree.structure(bf16.init(jax.random.PRNGKey(2), x_t, acts, t))
    y32, y16 = f32.apply(params, x_t, acts, t), bf16.apply(params, x_t, acts, t)
    assert y16.dtype == jnp.float32
    err = float(jnp.linalg.norm(y16 - y32) / jnp.linalg.norm(y32))
    assert 0 < err < 0.03, err  # bf16 has 8 mantissa bits: ~0.4% per operand
    grads = jax.grad(lambda p: jnp.mean(bf16.apply(p, x_t, acts, t) ** 2))(params)
    assert all(g.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    hlo = jax.jit(bf16.apply).lower(params, x_t, acts, t).as_text()
    dots = [line for line in hlo.splitlines() if "dot_general" in line]
    assert dots and all("bf16" in line and "-> tensor<8x" in line and "xf32>" in line.split("->")[-1]
                        for line in dots), dots[:3]
    # backward too: every matmul of the gradient takes bf16 operands (fp32 sums)
    loss = lambda p: jnp.mean(bf16.apply(p, x_t, acts, t) ** 2)
    hlo = jax.jit(jax.grad(loss)).lower(params).as_text()
    dots = [line.split(":")[-1] for line in hlo.splitlines() if "dot_general" in line]
    assert len(dots) >= 3 * 6 and all(line.count("bf16") == 2 and "xf32>" in line.split("->")[-1]
                                      for line in dots), dots
    grads32 = jax.grad(lambda p: jnp.mean(f32.apply(p, x_t, acts, t) ** 2))(params)
    cos = [float(jnp.vdot(a, b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b)))
           for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads32)) if a.ndim == 2]
    assert min(cos) > 0.99, cos
    kernel = grads["params"]["Dense_3"]["kernel"]  # a hidden layer's: summed in f32, not rounded to bf16
    assert bool(jnp.any(kernel != kernel.astype(jnp.bfloat16).astype(jnp.float32)))


# ------------------------------------------------------------------ settings tied to T
@pytest.mark.parametrize("steps,clamp_last,clamp,delta", [(128, 10, 0.25, 0.005), (16, 0, 2.0, 0.04),
                                                          (4, -1, 8.0, 0.16)])
def test_step_dependent_settings_scale_with_T(steps, clamp_last, clamp, delta):
    from agdjax.config import make_config
    cfg = make_config("halfcheetah", "smoke", n_diffusion_steps=steps)
    assert cfg.clamp_last_steps == clamp_last
    np.testing.assert_allclose(cfg.clamp_value, clamp, rtol=1e-12)
    np.testing.assert_allclose(cfg.delta_init, delta, rtol=1e-12)


@pytest.mark.parametrize("preset", ["paper", "cpu", "smoke"])
def test_perfect_denoiser_recovers_x0_at_each_presets_T(preset):
    """A denoiser that returns the true x0 makes the sampler (no guides, no action guidance)
    end at x0 at every preset's T: the clamp of the last steps scales with the step size, so
    it never binds on a perfect prediction (at T = 16 an unscaled ±0.25 clamp at t = 0 would
    leave ~2% of entries up to ~0.3 off: the last move |x0 - x_1| has noise std ~0.11)."""
    from agdjax import normalize
    from agdjax.config import make_config
    from agdjax.sampler import SamplerFns, sample
    cfg = make_config("halfcheetah", preset)
    obs_dim, act_dim, b, h = 3, 2, 4, 5
    x0 = jax.random.normal(jax.random.PRNGKey(0), (b, h, obs_dim + 2))
    stats = lambda d: normalize.RunningStats(jnp.ones(()), jnp.zeros((d,)), jnp.ones((d,)))
    norm = normalize.Normalizer(stats(obs_dim), stats(act_dim), stats(1))
    seen = {}

    def perfect(x_t, a, t):
        jax.debug.callback(lambda x, t_: seen.__setitem__(int(t_[0]), np.asarray(x)), x_t, t)
        return x0

    zero = lambda *args: jnp.zeros(args[0].shape[:-1])
    actor = lambda o: (jnp.zeros(o.shape[:-1] + (act_dim,)), jnp.ones(o.shape[:-1] + (act_dim,)))
    fns = SamplerFns(perfect, actor, zero, zero)
    im = sample(fns, diffusion.cosine_schedule(cfg.n_diffusion_steps, cfg.tau), norm, x0[:, 0, :obs_dim],
                jax.random.PRNGKey(1), delta=0.0, guide="none", guide_scale=0.0, gamma=0.99,
                act_dim=act_dim, horizon=h, clamp_last_steps=cfg.clamp_last_steps,
                clamp_value=cfg.clamp_value, action_guidance=False)
    jax.effects_barrier()
    out = np.concatenate([im.obs, im.reward[..., None]], -1)  # the terminal column is thresholded
    want = np.asarray(x0[..., :-1])
    assert cfg.clamp_last_steps >= 0 or cfg.n_diffusion_steps < 12  # the clamp is on except at tiny T
    np.testing.assert_allclose(out, want, atol=1e-4)


def test_action_input_scaling_option():
    """scale=True: sqrt(alpha_bar_t) * a (the reference); scale=False: a unchanged."""
    sched = diffusion.cosine_schedule(16, 1.0)
    a = jnp.ones((2, 3, 2))
    t = jnp.array([0, 15])
    scaled = np.asarray(diffusion.scaled_actions(sched, a, t))
    np.testing.assert_allclose(scaled[0], np.sqrt(float(sched.alpha_bar[0])), rtol=1e-6)
    np.testing.assert_allclose(scaled[1], np.sqrt(float(sched.alpha_bar[15])), rtol=1e-6)
    assert scaled[1].max() < 0.1  # at the highest noise level the reference's input is nearly gone
    np.testing.assert_array_equal(np.asarray(diffusion.scaled_actions(sched, a, t, scale=False)), np.asarray(a))


def test_action_input_scaling_per_preset():
    """`paper` keeps the reference's sqrt(alpha_bar_t) * a; the cpu preset's small denoiser
    sees a unscaled (better world model on the same replay, docs/RESULTS.md)."""
    from agdjax.config import make_config
    assert make_config("halfcheetah", "paper").scale_action_input
    assert not make_config("halfcheetah", "cpu").scale_action_input
    assert make_config("halfcheetah", "smoke").scale_action_input


def test_cpu_preset_trains_the_denoiser_on_the_reference_windows_per_env_step():
    """The cpu preset's smaller diffusion batch is made up by more updates: denoiser windows per
    env step (updates per env step x batch) equal the paper preset's, 1.0 x 256 (session 8 of
    docs/RESULTS.md: a quarter of that left the imagined policy gradient nearly orthogonal to
    the true one at 10k env steps)."""
    from agdjax.config import make_config
    paper, cpu = make_config("halfcheetah", "paper"), make_config("halfcheetah", "cpu")
    windows = lambda c: c.diffusion_steps_per_env_step * c.diffusion_batch
    assert windows(paper) == 256.0 and windows(cpu) == windows(paper)
    assert cpu.diffusion_batch < paper.diffusion_batch and cpu.diffusion_updates_per_iter == 2000


# ------------------------------------------------------------------ respaced sampling
def test_respace_keeps_alpha_bar_at_evenly_spaced_steps():
    """K < T: steps round(k (T-1)/(K-1)) kept (first and last among them), alpha_bar there
    unchanged, betas those of the K-step chain (cumprod(1 - beta_k) = alpha_bar_k), and the
    last reverse step's posterior puts all weight on x0_hat (Nichol & Dhariwal 2021 §4)."""
    sched = diffusion.cosine_schedule(128, 1.0)
    for k in (64, 32, 16, 5, 2):
        short, kept = diffusion.respace(sched, k)
        kept = np.asarray(kept)
        assert len(kept) == k and kept[0] == 0 and kept[-1] == 127 and np.all(np.diff(kept) > 0)
        np.testing.assert_array_equal(kept, np.round(np.arange(k) * 127 / (k - 1)).astype(int))
        np.testing.assert_array_equal(np.asarray(short.alpha_bar), np.asarray(sched.alpha_bar)[kept])
        np.testing.assert_allclose(np.cumprod(1 - np.asarray(short.betas, np.float64)),
                                   np.asarray(short.alpha_bar), rtol=1e-5, atol=1e-7)  # float32 betas near 1 (spacing 6e-8)
        np.testing.assert_allclose(float(short.coef_x0[0]), 1.0, rtol=1e-6)
        assert float(short.coef_xt[0]) == 0.0
    same, steps = diffusion.respace(sched, 128)
    assert same is sched and np.array_equal(np.asarray(steps), np.arange(128))
    with pytest.raises(ValueError, match="sampling_steps=129 must be in 1..128"):
        diffusion.respace(sched, 129)


def _sample_with(sched, timesteps, seen=None, x0=None, seed=1):
    from agdjax import normalize
    from agdjax.sampler import SamplerFns, sample
    obs_dim, act_dim, b, h = 3, 2, 4, 5
    x0 = jax.random.normal(jax.random.PRNGKey(0), (b, h, obs_dim + 2)) if x0 is None else x0
    stats = lambda d: normalize.RunningStats(jnp.ones(()), jnp.zeros((d,)), jnp.ones((d,)))
    norm = normalize.Normalizer(stats(obs_dim), stats(act_dim), stats(1))

    def denoise(x_t, a, t):  # a perfect prediction, pulled a little by x_t so that steps matter
        if seen is not None:
            jax.debug.callback(lambda t_: seen.append(int(t_[0])), t)
        return 0.9 * x0 + 0.1 * x_t + 0.01 * a.mean(-1, keepdims=True)

    zero = lambda *args: jnp.zeros(args[0].shape[:-1])
    actor = lambda o: (jnp.zeros(o.shape[:-1] + (act_dim,)), jnp.ones(o.shape[:-1] + (act_dim,)))
    im = sample(SamplerFns(denoise, actor, zero, zero), sched, norm, x0[:, 0, :obs_dim],
                jax.random.PRNGKey(seed), delta=0.1, guide="none", guide_scale=0.0, gamma=0.99,
                act_dim=act_dim, horizon=h, clamp_last_steps=-1, timesteps=timesteps)
    jax.effects_barrier()
    return im


def test_respacing_with_K_equal_T_is_the_unrespaced_sampler():
    sched = diffusion.cosine_schedule(16, 1.0)
    plain = _sample_with(sched, None)
    respaced = _sample_with(*diffusion.respace(sched, 16))
    for a, b in zip(plain, respaced):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_respaced_sampler_gives_the_denoiser_the_trained_steps():
    """K = 4 of T = 16: the denoiser is called at the kept steps of the T-step chain, from
    the noisiest down, and the result differs from the 16-step sample."""
    sched = diffusion.cosine_schedule(16, 1.0)
    seen = []
    im = _sample_with(*diffusion.respace(sched, 4), seen=seen)
    assert seen == [15, 10, 5, 0]
    full = _sample_with(sched, None)
    assert not np.allclose(np.asarray(im.obs), np.asarray(full.obs))


def test_sampling_steps_setting():
    """The per-step settings scale with K, not T; K is checked against T."""
    from agdjax.config import ConfigError, make_config
    cfg = make_config("halfcheetah", "paper", sampling_steps=16)
    assert cfg.n_diffusion_steps == 128 and cfg.n_sampling_steps == 16
    assert (cfg.clamp_last_steps, cfg.clamp_value, cfg.delta_init) == (0, 2.0, 0.04)
    assert make_config("halfcheetah", "paper").n_sampling_steps == 128
    with pytest.raises(ConfigError, match="--sampling_steps=200 must be an integer in 1..128"):
        make_config("halfcheetah", "paper", sampling_steps=200)
