"""The guides and the guided sampler.

Part 1, invariants on a toy problem with hand-made networks: s_0 never moves; sag/eag raise
the mean advantage over `none` from the same noise and weights; policy guidance raises the
log-probability of imagined actions.

Part 2, known answers against independent float64 NumPy references, with a non-linear critic
(a fixed random tanh MLP), a state-dependent actor, a non-trivial normaliser (means != 0,
stds != 1, per dimension) and non-zero terminals: the advantage, the guide objectives, the
state-guide gradient (finite differences in normalised space), the policy step, and one whole
reverse step of the sampler (recomputed by hand from the same keys).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agdjax import diffusion, normalize
from agdjax.config import make_config
from agdjax.guidance import (action_z_std, delta_update, guide_objective, one_step_advantage,
                             policy_guided_actions, state_guide_gradient)
from agdjax.networks import policy_dist
from agdjax.sampler import Guidance, SamplerFns, reverse_step, sample

OBS, ACT, H, T, B = 3, 2, 5, 8, 256
GAMMA = 0.5


def identity_norm():
    def stats(d):
        return normalize.RunningStats(jnp.ones(()), jnp.zeros((d,)), jnp.ones((d,)))
    return normalize.Normalizer(stats(OBS), stats(ACT), stats(1))


def toy_fns(record=None):
    def denoise(x_t, a, t):
        if record is not None:
            jax.debug.callback(lambda s: record.append(np.asarray(s)), x_t[:, 0, :OBS])
        return 0.5 * x_t + 0.1 * a.mean(-1, keepdims=True)

    actor = lambda o: (jnp.full(o.shape[:-1] + (ACT,), 0.3), jnp.full(o.shape[:-1] + (ACT,), 0.5))
    value = lambda o: 2.0 * o[..., 0]  # hand-made critic
    reward = lambda o, a: o[..., 1]  # hand-made reward model
    return SamplerFns(denoise, actor, value, reward)


def run(guide, scale=50.0, action_guidance=True, record=None, key=0):
    s0 = jax.random.normal(jax.random.PRNGKey(42), (B, OBS))
    return sample(toy_fns(record), diffusion.cosine_schedule(T, 1.0), identity_norm(), s0,
                  jax.random.PRNGKey(key), delta=0.05, guide=guide, guide_scale=scale, gamma=GAMMA,
                  act_dim=ACT, horizon=H, action_guidance=action_guidance), s0


def mean_advantage(im):
    return float(one_step_advantage(toy_fns().value, im.obs, im.reward, im.terminal, GAMMA).mean())


def test_s0_is_inpainted_at_every_step():
    record = []
    im, s0 = run("sag", record=record)
    assert len(record) == T
    for s in record:
        np.testing.assert_allclose(s, np.asarray(identity_norm().obs.normalize(s0)), atol=1e-6)
    np.testing.assert_allclose(np.asarray(im.obs[:, 0]), np.asarray(s0), atol=1e-5)


@pytest.mark.parametrize("guide", ["sag", "eag"])
def test_advantage_guides_raise_mean_advantage(guide):
    base, _ = run("none")
    guided, _ = run(guide)
    assert mean_advantage(guided) > mean_advantage(base) + 0.05, (mean_advantage(guided), mean_advantage(base))


def test_guide_scale_zero_equals_none():
    base, _ = run("none")
    zero, _ = run("sag", scale=0.0)
    np.testing.assert_allclose(np.asarray(zero.obs), np.asarray(base.obs), atol=1e-6)


def test_reward_guide_raises_model_reward():
    base, _ = run("none")
    guided, _ = run("reward")
    r = lambda im: float(im.obs[:, 1:-1, 1].mean())  # rows the guide moves
    assert r(guided) > r(base) + 0.05


def test_policy_guidance_raises_log_prob():
    with_pg, _ = run("none", action_guidance=True)
    without, _ = run("none", action_guidance=False)
    logp = lambda im: float(policy_dist(im.policy_mean, im.policy_std).log_prob(im.action).mean())
    assert logp(with_pg) > logp(without) + 0.01, (logp(with_pg), logp(without))


def test_policy_step_known_answer():
    actor = lambda o: (jnp.zeros(o.shape[:-1] + (1,)), jnp.full(o.shape[:-1] + (1,), 2.0))
    a = jnp.array([[[1.0], [10.0]]])  # 10 is beyond mu + 3 sigma = 6 and is clipped
    out, mu, sigma = policy_guided_actions(actor, jnp.zeros((1, 2, 4)), a, 0.5, 3.0, 1.0)
    # grad log N(a; 0, 2) = -a / 4
    np.testing.assert_allclose(np.asarray(out[0, :, 0]), [1.0 - 0.5 * 0.25, 6.0 - 0.5 * 1.5], rtol=1e-6)


def test_guide_objectives_known_values():
    adv = jnp.array([0.0, 1.0])
    np.testing.assert_allclose(float(guide_objective("eag", advantage=adv)), 1.0)
    np.testing.assert_allclose(float(guide_objective("sag", advantage=adv)),
                               np.log(0.5) + np.log(1 / (1 + np.exp(-1.0))), rtol=1e-6)
    with pytest.raises(ValueError, match="allowed"):
        guide_objective("bogus", advantage=adv)


# ------------------------------------------------------------------ part 2: known answers
_rng = np.random.default_rng(0)
W1, B1, W2 = _rng.normal(size=(OBS, 8)) * 0.7, _rng.normal(size=8) * 0.3, _rng.normal(size=8)
WA, BA, WS = _rng.normal(size=(OBS, ACT)) * 0.5, _rng.normal(size=ACT) * 0.3, _rng.normal(size=(OBS, ACT))
WR = _rng.normal(size=OBS)
STATS = dict(obs=([0.5, -1.0, 2.0], [2.0, 0.5, 3.0]), action=([0.2, -0.1], [0.5, 2.0]), reward=([0.3], [2.0]))


def sigmoid(z, xp):
    return 1.0 / (1.0 + xp.exp(-z))


def critic(o, xp=jnp):
    """A fixed random tanh MLP on raw states: [..., OBS] -> [...]."""
    return xp.tanh(o @ W1 + B1) @ W2


def actor(o, xp=jnp):
    """State-dependent Gaussian policy on raw states: -> (mu, sigma), [..., ACT] each."""
    return xp.tanh(o @ WA + BA), 0.3 + 0.5 * sigmoid(o @ WS, xp)


def reward_model(o, a, xp=jnp):
    return xp.sin(o @ WR) + 0.3 * (a**2).sum(-1)


def real_norm():
    """Normaliser with means != 0 and stds != 1, different per dimension."""
    s = {k: normalize.RunningStats(jnp.ones(()), jnp.asarray(m, jnp.float32), jnp.asarray(sd, jnp.float32) ** 2)
         for k, (m, sd) in STATS.items()}
    return normalize.Normalizer(s["obs"], s["action"], s["reward"])


def np_stats(stats):
    """(mean, std) in float64, exactly the normaliser's (std includes its epsilon)."""
    return np.asarray(stats.mean, np.float64), np.asarray(stats.std, np.float64)


def ref_objective(guide, s_norm, r_norm, term, a_raw, norm):
    """The guide's log-weight in float64, from the definitions (DESIGN §1), s_norm [B,H,OBS]."""
    (om, osd), (rm, rsd) = np_stats(norm.obs), np_stats(norm.reward)
    s = s_norm * osd + om
    if guide == "reward":
        return reward_model(s, a_raw, np).sum()
    r, d, v = r_norm * rsd[0] + rm[0], (term > 0.5).astype(np.float64), critic(s, np)
    total = 0.0
    for b in range(s.shape[0]):
        for k in range(s.shape[1] - 1):
            adv = r[b, k] + GAMMA * (1 - d[b, k]) * v[b, k + 1] - v[b, k]
            total += -np.log1p(np.exp(-adv)) if guide == "sag" else adv
    return total


def ref_gradient(guide, s_norm, r_norm, term, a_raw, norm, eps=1e-6):
    """Central finite differences of ref_objective w.r.t. the normalised states; rows 0 and
    H-1 are not moved by the guide (zero)."""
    s_norm = np.asarray(s_norm, np.float64)
    g = np.zeros_like(s_norm)
    for idx in np.ndindex(*s_norm.shape):
        if idx[1] in (0, s_norm.shape[1] - 1):
            continue
        up, dn = s_norm.copy(), s_norm.copy()
        up[idx] += eps
        dn[idx] -= eps
        g[idx] = (ref_objective(guide, up, r_norm, term, a_raw, norm)
                  - ref_objective(guide, dn, r_norm, term, a_raw, norm)) / (2 * eps)
    return g


def guide_inputs(key=1, b=3):
    ks = jax.random.split(jax.random.PRNGKey(key), 3)
    s_hat = jax.random.normal(ks[0], (b, H, OBS))
    r_norm = jax.random.normal(ks[1], (b, H))
    term = jnp.array([[0.0, 0.7, 0.0, 0.2, 0.0], [0.9, 0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.6, 0.0, 0.0]])[:b]
    a_raw = 1.5 * jax.random.normal(ks[2], (b, H, ACT))
    return s_hat, r_norm, term, a_raw


def test_one_step_advantage_known_answer():
    s, r, term, _ = guide_inputs()
    d = (term > 0.5).astype(jnp.float32)
    got = np.asarray(one_step_advantage(critic, s, r, d, GAMMA))
    v = critic(np.asarray(s, np.float64), np)
    want = [[r[b, k] + GAMMA * (1 - d[b, k]) * v[b, k + 1] - v[b, k] for k in range(H - 1)] for b in range(3)]
    np.testing.assert_allclose(got, np.asarray(want), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("guide", ["sag", "eag", "reward"])
def test_state_guide_gradient_matches_finite_differences(guide):
    """G = grad of the objective in normalised state space, through the un-normalisation of
    states and rewards, terminals thresholded at 0.5, rows 0 and H-1 zero."""
    norm = real_norm()
    s_hat, r_norm, term, a_raw = guide_inputs()
    got = np.asarray(state_guide_gradient(guide, s_hat, r_norm, term, a_raw, norm.obs, norm.reward,
                                          critic, reward_model, GAMMA))
    want = ref_gradient(guide, s_hat, np.asarray(r_norm, np.float64), np.asarray(term),
                        np.asarray(a_raw, np.float64), norm)
    assert np.all(got[:, 0] == 0) and np.all(got[:, -1] == 0)
    assert np.abs(want).max() > 0.1  # the check is not vacuous
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


def test_eag_gradient_is_the_telescoped_value_gradient():
    """eag's objective sum_k A_k telescopes: the rewards are held fixed and rows 0 and H-1 do
    not move, so its G at row k (1 <= k <= H-2) is (gamma (1 - d_{k-1}) - 1) grad_s V(s_k),
    i.e. -(1 - gamma) grad V on rows after a non-terminal step: 1% of the critic's gradient
    at the presets' gamma = 0.99, and pointing to lower value. The AGD-MBRL reference's EAG
    line (`advantage.sum()`, polygrad/sampling/functions.py) takes the same objective."""
    norm = real_norm()
    s_hat, r_norm, term, a_raw = guide_inputs()
    got = state_guide_gradient("eag", s_hat, r_norm, term, a_raw, norm.obs, norm.reward,
                               critic, reward_model, GAMMA)
    grad_v = jax.grad(lambda s: critic(norm.obs.unnormalize(s)).sum())(s_hat)  # per row: grad V(s_k)
    d = (term > 0.5).astype(jnp.float32)
    want = (GAMMA * (1.0 - d[:, :-2]) - 1.0)[..., None] * grad_v[:, 1:-1]
    assert np.abs(np.asarray(want)).max() > 0.1  # not vacuous
    np.testing.assert_allclose(np.asarray(got[:, 1:-1]), np.asarray(want), rtol=1e-4, atol=1e-6)


def test_policy_step_known_answer_state_dependent_actor():
    s_raw, _, _, a_raw = guide_inputs(key=2)
    a_raw = a_raw.at[0, 0].set(jnp.array([5.0, -5.0]))  # beyond mu ± 3 sigma: clipped
    delta = 0.2
    out, mu, sigma = policy_guided_actions(actor, s_raw, a_raw, delta, 3.0, 1.0)
    m, sd = actor(np.asarray(s_raw, np.float64), np)
    a_c = np.clip(np.asarray(a_raw, np.float64), m - 3 * sd, m + 3 * sd)
    np.testing.assert_allclose(np.asarray(mu), m, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(sigma), sd, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(out), a_c + delta * (m - a_c) / sd**2, rtol=1e-5, atol=1e-5)
    off, _, _ = policy_guided_actions(actor, s_raw, a_raw, delta, 3.0, 0.0)
    np.testing.assert_allclose(np.asarray(off), a_c, rtol=1e-6, atol=1e-6)


def step_denoiser(x_t, a_scaled, t):
    """A deterministic, non-linear stand-in for the denoiser."""
    return 0.7 * x_t + 0.25 * jnp.tanh(x_t[..., ::-1]) + 0.3 * a_scaled.sum(-1, keepdims=True) + 0.01 * t[:, None, None]


STEP_FNS = SamplerFns(step_denoiser, actor, critic, reward_model)


def ref_reverse_step(sched, norm, s0, x_t, a_t, t, key, g: Guidance):
    """One guided reverse step recomputed in float64 from DESIGN §1 (steps 1-5); the guide
    gradient by finite differences. Returns (x_prev, a_prev, guide_ratio)."""
    f64 = lambda x: np.asarray(x, np.float64)
    (om, osd), (am, asd) = np_stats(norm.obs), np_stats(norm.action)
    k_a, k_x = jax.random.split(key)
    eps_a, eps_x = f64(jax.random.normal(k_a, a_t.shape)), f64(jax.random.normal(k_x, x_t.shape))
    x_t, a_t, s0 = f64(x_t), f64(a_t), f64(s0)
    c0, ct = float(sched.coef_x0[t]), float(sched.coef_xt[t])
    sigma = float(np.exp(0.5 * sched.posterior_log_var[t]))
    # 1. the denoiser sees the action clipped to the environment's range
    a_env = (np.clip(a_t * asd + am, -g.action_bound, g.action_bound) - am) / asd
    ts = jnp.full((x_t.shape[0],), t)
    x0 = f64(step_denoiser(jnp.asarray(x_t, jnp.float32), jnp.asarray(np.sqrt(float(sched.alpha_bar[t])) * a_env, jnp.float32), ts))
    x0[:, 0, :OBS] = s0
    # 3. policy at the predicted clean states; clip to mu ± 3 sigma, one step on log pi, noise
    m, sd = actor(x0[..., :OBS] * osd + om, np)
    a_c = np.clip(a_t * asd + am, m - g.clip_sigmas * sd, m + g.clip_sigmas * sd)
    a_new = a_c + (t > 0) * g.action_guidance * g.delta * (m - a_c) / sd**2
    a_prev = (a_new - am) / asd + sigma * eps_a
    # 4. state guide on x0_hat, in normalised units
    ratio = 0.0
    if g.guide != "none":
        grad = ref_gradient(g.guide, x0[..., :OBS], x0[..., -2], x0[..., -1],
                            np.clip(a_new, -g.action_bound, g.action_bound), norm)
        step = g.guide_scale * sigma**4 * grad
        ratio = np.linalg.norm(step) / np.linalg.norm(x0[..., :OBS])
        x0[..., :OBS] += step
    mu = c0 * x0 + ct * x_t
    # 5. clamp, noise, in-paint
    if t <= g.clamp_last_steps:
        mu = x_t + np.clip(mu - x_t, -g.clamp_value, g.clamp_value)
    x_prev = mu + sigma * eps_x
    x_prev[:, 0, :OBS] = s0
    return x_prev, a_prev, ratio


def step_inputs(b=3, key=3):
    ks = jax.random.split(jax.random.PRNGKey(key), 3)
    x_t = jax.random.normal(ks[0], (b, H, OBS + 2)) * 1.2
    a_t = jax.random.normal(ks[1], (b, H, ACT)) * 1.5  # raw actions beyond [-1, 1] too
    s0 = x_t[:, 0, :OBS]
    return s0, x_t, a_t


@pytest.mark.parametrize("guide,t,clamp_last_steps", [
    ("none", 5, -1), ("sag", 5, -1), ("eag", 4, -1), ("reward", 5, -1),
    ("sag", 1, 2),  # the clamp binds (clamp_value 0.05)
    ("none", 0, -1),  # t = 0: no action step
])
def test_reverse_step_matches_hand_computation(guide, t, clamp_last_steps):
    sched, norm = diffusion.cosine_schedule(T, 1.0), real_norm()
    s0, x_t, a_t = step_inputs()
    g = Guidance(delta=0.3, guide=guide, guide_scale=3.0, gamma=GAMMA, clamp_last_steps=clamp_last_steps,
                 clamp_value=0.05)
    key = jax.random.PRNGKey(7)
    x_prev, a_prev, (mu_pi, sigma_pi, ratio) = reverse_step(STEP_FNS, sched, norm, s0, g, x_t, a_t, t, key)
    want_x, want_a, want_ratio = ref_reverse_step(sched, norm, s0, x_t, a_t, t, key, g)
    np.testing.assert_allclose(np.asarray(a_prev), want_a, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(x_prev), want_x, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(float(ratio), want_ratio, rtol=1e-3, atol=1e-7)
    if clamp_last_steps >= t:
        assert np.abs(np.asarray(x_prev - x_t))[:, 1:].max() > 0.05  # noise on top of a binding clamp


def test_sample_is_the_scan_of_reverse_steps():
    """sample = x_T, a_T from the key, then reverse_step for t = T-1 … 0 with one key each;
    Imagined holds raw units, the policy at t = 0 and the mean guide ratio over t >= 1."""
    sched, norm = diffusion.cosine_schedule(4, 1.0), real_norm()
    s0, _, _ = step_inputs()
    s0_raw = norm.obs.unnormalize(s0)
    key = jax.random.PRNGKey(11)
    kw = dict(delta=0.3, guide="sag", guide_scale=3.0, gamma=GAMMA)
    im = sample(STEP_FNS, sched, norm, s0_raw, key, act_dim=ACT, horizon=H, clamp_last_steps=0, **kw)
    k_x, k_a, k_loop = jax.random.split(key, 3)
    x = diffusion.inpaint(jax.random.normal(k_x, (3, H, OBS + 2)), s0)
    a = jax.random.normal(k_a, (3, H, ACT))
    ratios = []
    for t, k in zip(range(3, -1, -1), jax.random.split(k_loop, 4)):
        x, a, (mu_pi, sigma_pi, r) = reverse_step(STEP_FNS, sched, norm, s0, Guidance(**kw, clamp_last_steps=0), x, a, t, k)
        ratios.append(float(r))
    obs, reward, term = normalize.unpack(norm, x)
    for got, want in [(im.obs, obs), (im.reward, reward), (im.terminal, term > 0.5),
                      (im.action, norm.action.unnormalize(a)), (im.policy_mean, mu_pi), (im.policy_std, sigma_pi)]:
        np.testing.assert_allclose(np.asarray(got), np.asarray(want, np.float32), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(float(im.guide_step_ratio), np.mean(ratios[:-1]), rtol=1e-5)


def _recorded_model_actions(action_bound):
    """(raw actions the denoiser saw at each step, actions the reward model saw, Imagined) for a
    policy whose mean (3.0) lies outside [-1, 1]."""
    sched, norm = diffusion.cosine_schedule(T, 1.0), real_norm()
    seen, seen_r = [], []

    def denoise(x_t, a_scaled, t):
        jax.debug.callback(lambda a, t_: seen.append((np.asarray(a), int(t_[0]))), a_scaled, t)
        return step_denoiser(x_t, a_scaled, t)

    def reward_fn(o, a):
        jax.debug.callback(lambda a_: seen_r.append(np.asarray(a_)), a)
        return reward_model(o, a)

    far_actor = lambda o: (jnp.full(o.shape[:-1] + (ACT,), 3.0), jnp.full(o.shape[:-1] + (ACT,), 0.5))
    fns = SamplerFns(denoise, far_actor, critic, reward_fn)
    s0_raw = norm.obs.unnormalize(step_inputs()[0])
    im = sample(fns, sched, norm, s0_raw, jax.random.PRNGKey(0), delta=0.3, guide="reward", guide_scale=1.0,
                gamma=GAMMA, act_dim=ACT, horizon=H, action_bound=action_bound)
    jax.effects_barrier()
    assert len(seen) == T and len(seen_r) >= T - 1
    am, asd = np_stats(norm.action)
    raw = [a_scaled / np.sqrt(float(sched.alpha_bar[t])) * asd + am for a_scaled, t in seen]
    return raw, seen_r, im


def test_world_model_sees_only_environment_range_actions():
    """With action_bound=1 (a replay of clipped actions) the denoiser and the reward model get
    actions in [-1, 1] (raw) at every step even when the policy's mean is 3; the learner's
    Imagined.action is the policy's own action."""
    raw, seen_r, im = _recorded_model_actions(1.0)
    for t, a in enumerate(raw):
        assert np.abs(a).max() <= 1.0 + 1e-5, (t, np.abs(a).max())
    assert max(np.abs(a).max() for a in seen_r) <= 1.0 + 1e-6
    assert float(im.action.max()) > 1.5  # the learner trains on the policy's unclipped action


def test_world_model_sees_the_raw_action_under_the_training_rule():
    """The training program's rule (envs.REPLAY_ACTIONS = 'raw', action_bound=None): the replay
    stores the raw sample, so the world model is queried on the same raw actions the policy
    produces, and the final imagined actions are the ones it saw last."""
    from agdjax import envs
    assert envs.REPLAY_ACTIONS == "raw"
    raw, seen_r, im = _recorded_model_actions(None)
    assert max(np.abs(a).max() for a in raw) > 1.5 and max(np.abs(a).max() for a in seen_r) > 1.5
    np.testing.assert_allclose(raw[-1], np.asarray(im.action), rtol=1e-4, atol=1e-4)


def test_guide_step_ratio_zero_for_none_positive_for_sag():
    sched, norm = diffusion.cosine_schedule(T, 1.0), real_norm()
    s0_raw = norm.obs.unnormalize(step_inputs()[0])
    kw = dict(delta=0.3, guide_scale=3.0, gamma=GAMMA, act_dim=ACT, horizon=H)
    none = sample(STEP_FNS, sched, norm, s0_raw, jax.random.PRNGKey(0), guide="none", **kw)
    sag = sample(STEP_FNS, sched, norm, s0_raw, jax.random.PRNGKey(0), guide="sag", **kw)
    assert float(none.guide_step_ratio) == 0.0
    assert float(sag.guide_step_ratio) > 1e-3


# ------------------------------------------------------------------ delta tuning, guide scales
def test_action_z_std_known_answer_ignores_last_row():
    mu, sd = jnp.full((2, 3, 2), 0.5), jnp.array([0.5, 2.0]) * jnp.ones((2, 3, 2))
    z = jnp.array([[1.0, -1.0, 100.0], [1.0, -1.0, -100.0]])  # rows 0, 1 per batch; row 2 ignored
    z = jnp.stack([z, 2.0 * z], -1)  # dim 1 twice as spread
    got = float(action_z_std(mu + sd * z, mu, sd))
    # unbiased std of (1, -1, 1, -1) is sqrt(4/3); dims: sqrt(4/3) and 2 sqrt(4/3)
    np.testing.assert_allclose(got, 1.5 * np.sqrt(4 / 3), rtol=1e-6)


def test_delta_update_sign():
    log_delta = jnp.log(0.005)
    np.testing.assert_allclose(float(delta_update(log_delta, 2.0, 0.1)), float(log_delta) + 0.1, rtol=1e-6)
    assert float(delta_update(log_delta, 1.5, 3e-3)) > float(log_delta)  # too wide: pull harder
    assert float(delta_update(log_delta, 0.5, 3e-3)) < float(log_delta)
    assert float(delta_update(log_delta, 1.0, 3e-3)) == float(log_delta)


@pytest.mark.parametrize("task,guide,c", [
    ("halfcheetah", "sag", 3.0), ("hopper", "eag", 4.0), ("walker2d", "sag", 4.0), ("reacher", "sag", 4.0),
    ("halfcheetah", "eag", 3.0), ("hopper", "sag", 4.0), ("walker2d", "reward", 1.0), ("reacher", "none", 0.0),
])
def test_guide_scale_per_task(task, guide, c):
    assert make_config(task, "smoke", guide=guide).c == c
    assert make_config(task, "smoke", guide=guide, guide_scale=2.5).c == 2.5


# ------------------------------------------------------------------ the guide at bf16 (issue 11)
def test_bf16_guide_keeps_the_gradient_direction():
    """The guide's networks at bf16 operands (fp32 params and accumulation): on a fixed batch
    of HalfCheetah-sized states (obs 17, critic 2x128 as in the cpu preset, 64 x 10 states),
    the state-guide gradient of sag and eag and the policy step keep cosine similarity >= 0.99
    to fp32, and they do differ from it (bf16 is really used)."""
    from agdjax.networks import Actor, Critic
    obs_dim, act_dim, b, h = 17, 6, 64, 10
    ks = jax.random.split(jax.random.PRNGKey(7), 6)
    critic32, critic16 = Critic(128), Critic(128, dtype=jnp.bfloat16)
    actor32, actor16 = Actor(act_dim, 128), Actor(act_dim, 128, dtype=jnp.bfloat16)
    cp = critic32.init(ks[0], jnp.zeros((1, obs_dim)))
    ap = actor32.init(ks[1], jnp.zeros((1, obs_dim)))
    stats = lambda d, k: normalize.RunningStats(jnp.ones(()), jax.random.normal(k, (d,)),
                                                jnp.exp(jax.random.normal(k, (d,))))
    norm = normalize.Normalizer(stats(obs_dim, ks[2]), stats(act_dim, ks[3]), stats(1, ks[4]))
    s_hat = jax.random.normal(ks[5], (b, h, obs_dim))
    r_norm = jax.random.normal(ks[0], (b, h))
    term = (jax.random.uniform(ks[1], (b, h)) > 0.9).astype(jnp.float32)
    a_raw = jax.random.normal(ks[2], (b, h, act_dim))
    cos = lambda x, y: float(jnp.vdot(x, y) / (jnp.linalg.norm(x) * jnp.linalg.norm(y)))
    rel = lambda x, y: float(jnp.linalg.norm(x - y) / jnp.linalg.norm(y))
    per_traj = lambda x, y: float(jnp.min(jnp.sum(x * y, (1, 2)) / (jnp.linalg.norm(x, axis=(1, 2))
                                                                      * jnp.linalg.norm(y, axis=(1, 2)))))
    for guide in ("sag", "eag"):
        g32, g16 = (state_guide_gradient(guide, s_hat, r_norm, term, a_raw, norm.obs, norm.reward,
                                         lambda o, c=c: c.apply(cp, o), None, GAMMA) for c in (critic32, critic16))
        assert cos(g16, g32) >= 0.99 and per_traj(g16, g32) >= 0.95, (guide, cos(g16, g32), per_traj(g16, g32))
        assert 0 < rel(g16, g32) < 0.05, (guide, rel(g16, g32))  # the size too: the step is c sigma^4 G
    s_raw = norm.obs.unnormalize(s_hat)
    a32, a16 = (policy_guided_actions(lambda o, a=a: a.apply(ap, o), s_raw, a_raw, 0.1, 3.0, 1.0)[0]
                for a in (actor32, actor16))
    assert cos(a16 - a_raw, a32 - a_raw) >= 0.99 and per_traj(a16 - a_raw, a32 - a_raw) >= 0.95
    assert 0 < rel(a16 - a_raw, a32 - a_raw) < 0.05


@pytest.mark.parametrize("guide", ["sag", "reward"])
def test_guide_networks_run_at_the_denoiser_dtype_and_the_learner_at_fp32(guide):
    """One agent phase (imagination + A2C update) of the training program: the actor's and
    critic's matmuls (hidden 24 x 24) and the reward model's (20 x 20), sizes only they have
    here, take `denoiser_dtype` operands inside the sampler (bf16 with
    --denoiser_dtype=bfloat16), while the learner trains them in fp32. (With float32, no bf16 at
    all: `test_bfloat16_denoiser_keeps_fp32_params_output_and_gradients` covers the modules.)"""
    from agdjax.train import make_train
    prog = make_train(make_config("halfcheetah", "smoke", guide=guide, hidden=24, reward_model_hidden=20,
                                  denoiser_dtype="bfloat16", backend="positional"))
    state = jax.eval_shape(prog.init, jax.random.PRNGKey(0))
    hlo = jax.jit(prog.phases["agent"]).lower(state, jax.random.PRNGKey(1)).as_text()
    dots = [line.split(":")[-1] for line in hlo.splitlines() if "dot_general" in line]
    count = lambda shape: len([d for d in dots if shape in d])
    assert count("24x24xf32") >= 6, dots  # the learner: actor and critic, forward and backward
    if guide == "sag":
        assert count("24x24xbf16") >= 3  # the guide's critic forward and backward, the actor's step
    else:
        assert count("20x20xbf16") >= 1 and count("24x24xbf16") >= 1  # the reward model; the actor's step


def test_guide_last_row_ablation_moves_row_h_minus_1_only():
    """--guide_last_row keeps row H-1's gradient, which the reference zeroes: for eag it is
    gamma (1 - d_{H-2}) grad V(s_{H-1}), the one term of sum_k A_k that raises the value;
    rows 0 … H-2 are unchanged. Through the sampler it changes the step's x0_hat (so x_prev)
    only through that row; with it off the step is the reference's."""
    norm = real_norm()
    s_hat, r_norm, term, a_raw = guide_inputs()
    args = (s_hat, r_norm, term, a_raw, norm.obs, norm.reward, critic, reward_model, GAMMA)
    for guide in ("sag", "eag"):
        off, on = (np.asarray(state_guide_gradient(guide, *args, last_row=lr)) for lr in (False, True))
        np.testing.assert_array_equal(on[:, :-1], off[:, :-1])
        assert np.all(off[:, -1] == 0) and np.abs(on[:, -1]).max() > 0.01
    grad_v = jax.grad(lambda s: critic(norm.obs.unnormalize(s)).sum())(s_hat)
    d = (term > 0.5).astype(jnp.float32)
    on = state_guide_gradient("eag", *args, last_row=True)
    np.testing.assert_allclose(np.asarray(on[:, -1]), np.asarray(GAMMA * (1.0 - d[:, -2, None]) * grad_v[:, -1]),
                               rtol=1e-4, atol=1e-6)
    sched = diffusion.cosine_schedule(T, 1.0)
    s0, x_t, a_t = step_inputs()
    step = lambda lr: reverse_step(STEP_FNS, sched, norm, s0, Guidance(
        delta=0.3, guide="sag", guide_scale=3.0, gamma=GAMMA, clamp_last_steps=-1, guide_last_row=lr),
        x_t, a_t, 5, jax.random.PRNGKey(7))[0]
    ref = ref_reverse_step(sched, norm, s0, x_t, a_t, 5, jax.random.PRNGKey(7), Guidance(
        delta=0.3, guide="sag", guide_scale=3.0, gamma=GAMMA, clamp_last_steps=-1))[0]
    np.testing.assert_allclose(np.asarray(step(False)), ref, rtol=1e-4, atol=1e-4)
    moved = np.abs(np.asarray(step(True) - step(False)))
    assert moved[:, -1].max() > 1e-4 and moved[:, :-1].max() < 1e-6  # the posterior mean is per row


def test_guide_last_row_needs_a_state_guide():
    from agdjax.config import ConfigError, make_config
    assert make_config("halfcheetah", "smoke", guide="sag", guide_last_row=True).guide_last_row is True
    for bad in (dict(guide="none", guide_last_row=True), dict(guide="sag", guide_last_row=1)):
        with pytest.raises(ConfigError, match="--guide_last_row"):
            make_config("halfcheetah", "smoke", **bad)
