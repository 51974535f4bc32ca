"""The simulator state in the replay, restoring it, the world-model error against the
simulator (known answers; logged with each evaluation; the `agdjax.wm_error` command) and
oracle imagination (the learner's data straight from the simulator)."""
import dataclasses
import functools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from agdjax import envs, loop, replay as rb, train, wm_error
from agdjax.config import make_config


def test_trajectory_errors_known_answer():
    B, H, D = 2, 3, 2
    sim = jnp.zeros((B, H, D))
    im = sim.at[:, 1].set(1.0).at[:, 2].set(jnp.array([[2.0, 0.0], [0.0, 0.0]]))
    r_sim, r_im = jnp.zeros((B, H - 1)), jnp.full((B, H - 1), 0.5)
    m = wm_error.trajectory_errors(im, r_im, sim, r_sim)
    assert float(m["wm_state_error_1"]) == pytest.approx(1.0)
    assert float(m["wm_state_error_last"]) == pytest.approx(1.0)  # (4 + 0) / 2 dims, then (2 + 0) / 2 trajs
    assert float(m["wm_reward_error"]) == pytest.approx(0.25)
    np.testing.assert_allclose(np.asarray(m["wm_state_error"]), [0.0, 1.0, 1.0])
    # a trajectory whose imagined transition 0 terminated counts only at step 0
    term = jnp.zeros((B, H)).at[0, 0].set(1.0)
    m = wm_error.trajectory_errors(im, r_im, sim, r_sim, term)
    assert float(m["wm_state_error_last"]) == pytest.approx(0.0)
    assert float(m["wm_state_error_1"]) == pytest.approx(1.0)  # only trajectory 1 counts
    # a perfect world model has no error
    m = wm_error.trajectory_errors(sim, r_sim, sim, r_sim)
    assert all(float(jnp.max(v)) == 0.0 for v in m.values())


def test_advantage_corr_known_answers():
    """A = sum_k gamma^k r_k + gamma^(H-1) V(s_{H-1}) - V(s_0), correlated over trajectories."""
    B, H, D, gamma = 6, 3, 2, 0.5
    key = jax.random.PRNGKey(0)
    sim = jax.random.normal(key, (B, H, D)).at[:, 0].set(jax.random.normal(jax.random.PRNGKey(1), (B, D)))
    r_sim = jax.random.normal(jax.random.PRNGKey(2), (B, H - 1))
    value = lambda o: o[..., 0] ** 2 - o[..., 1]  # non-linear, so V(s_{H-1}) matters
    no_term, no_sim_term = jnp.zeros((B, H)), jnp.zeros((B, H - 1))
    corr = lambda im, r_im, t=no_term, ts=no_sim_term: float(
        wm_error.advantage_corr(value, gamma, im, r_im, t, sim, r_sim, ts))
    assert corr(sim, r_sim) == pytest.approx(1.0)  # a perfect model
    # the estimate by hand for an imagined model with other rewards and last states
    im = sim.at[:, -1].set(jax.random.normal(jax.random.PRNGKey(3), (B, D)))
    r_im = jax.random.normal(jax.random.PRNGKey(4), (B, H - 1))
    est = lambda o, r: r[:, 0] + gamma * r[:, 1] + gamma ** 2 * value(o[:, -1]) - value(o[:, 0])
    want = np.corrcoef(np.asarray(est(im, r_im)), np.asarray(est(sim, r_sim)))[0, 1]
    assert corr(im, r_im) == pytest.approx(want, abs=1e-5)
    # an imagined advantage that is the true one reversed (same start states) -> -1
    a_sim = est(sim, r_sim)
    r_rev = r_sim.at[:, 0].add(-2 * a_sim)
    assert corr(sim, r_rev) == pytest.approx(-1.0, abs=1e-5)
    # terminated trajectories (imagined or simulated) are left out
    far = r_rev.at[0, 0].set(1e6)
    t = no_term.at[0, 1].set(1.0)
    assert corr(sim, far, t) == pytest.approx(-1.0, abs=1e-5)
    assert corr(sim, far, no_term, no_sim_term.at[0, 0].set(1.0)) == pytest.approx(-1.0, abs=1e-5)
    assert math.isnan(corr(sim, r_sim, jnp.ones((B, H))))  # nothing left
    nan_left_out = r_rev.at[0, 0].set(jnp.nan)
    assert corr(sim, nan_left_out, t) == pytest.approx(-1.0, abs=1e-5)


def test_action_cost_ratio_known_answers():
    """Slope of the imagined reward on c = -sum_j a_j^2 over the simulator's slope on it."""
    B, H, A = 16, 4, 3
    a = jax.random.normal(jax.random.PRNGKey(0), (B, H - 1, A))
    c = -(a ** 2).sum(-1)
    f = jax.random.normal(jax.random.PRNGKey(1), (B, H - 1))
    f = f - f.mean() - ((f - f.mean()) * (c - c.mean())).sum() / ((c - c.mean()) ** 2).sum() * (c - c.mean())
    sim = f + 0.1 * c  # HalfCheetah's control-cost weight
    t, ts = jnp.zeros((B, H)), jnp.zeros((B, H - 1))
    ratio = lambda r_im, r_sim=sim, t=t, ts=ts: float(wm_error.action_cost_ratio(a, r_im, r_sim, t, ts))
    assert ratio(sim) == pytest.approx(1.0, abs=1e-5)  # charges the action as the simulator does
    assert ratio(f) == pytest.approx(0.0, abs=1e-5)  # an action's size changes nothing
    assert ratio(0.3 * f + 0.05 * c) == pytest.approx(0.5, abs=1e-5)
    assert ratio(sim, 10.0 * sim) == pytest.approx(0.1, abs=1e-5)  # no task constant needed
    # by hand, on rewards that are not orthogonal to c
    r_im = jax.random.normal(jax.random.PRNGKey(2), (B, H - 1)) + 0.2 * c
    r_sim = jax.random.normal(jax.random.PRNGKey(3), (B, H - 1)) + 0.3 * c
    slope = lambda r, keep: np.polyfit(np.asarray(c)[keep], np.asarray(r)[keep], 1)[0]
    every = np.ones((B, H - 1), bool)
    assert ratio(r_im, r_sim) == pytest.approx(slope(r_im, every) / slope(r_sim, every), rel=1e-4)
    # a transition counts while neither trajectory has terminated before it
    keep = every.copy()
    keep[0, 2:] = False  # imagined transition 1 of trajectory 0 terminated
    keep[1, 1:] = False  # simulated transition 0 of trajectory 1 terminated
    want = slope(r_im, keep) / slope(r_sim, keep)
    far_im, far_sim = r_im.at[0, 2].set(1e6).at[1, 1].set(jnp.nan), r_sim.at[1, 2].set(-1e6)
    assert ratio(far_im, far_sim, t.at[0, 1].set(1.0), ts.at[1, 0].set(1.0)) == pytest.approx(want, rel=1e-4)
    # NaN where the simulator's reward does not charge the action, or nothing is left
    assert math.isnan(ratio(f, f))
    assert math.isnan(ratio(sim, -sim))
    two = float(wm_error.action_cost_ratio(a[:2], sim[:2], sim[:2], t[:2].at[:, 0].set(1.0), ts[:2]))
    assert math.isnan(two)  # 2 trajectories ended at transition 0: 2 transitions count


def test_guide_effect_known_answer():
    """State shift in normalised units over rows 1..H-1; advantage gain under the critic."""
    B, H, D, gamma = 2, 3, 2, 0.5
    base = jax.random.normal(jax.random.PRNGKey(0), (B, H, D))
    obs = base.at[:, 1:, 0].add(2.0)  # +2 raw on dimension 0 of rows 1..H-1
    r_base = jax.random.normal(jax.random.PRNGKey(1), (B, H - 1))
    r = r_base + 0.25
    d0, d = jnp.zeros((B, H)), jnp.zeros((B, H)).at[0, 0].set(1.0)
    normalize = lambda x: (x - 1.0) / jnp.array([4.0, 1.0])  # std 4 on dimension 0
    value = lambda o: o[..., 0] ** 2  # non-linear
    full = lambda rr: jnp.concatenate([rr, jnp.full((B, 1), 9.0)], 1)  # row H-1's reward: no transition
    m = wm_error.guide_effect(normalize, value, gamma, obs, full(r), d, base, full(r_base), d0)
    assert float(m["guide_state_shift"]) == pytest.approx(np.sqrt(0.5 ** 2 / D))  # 2 / 4 on half the entries
    adv = lambda o, rr, dd: rr + gamma * (1 - dd[:, :-1]) * value(o[:, 1:]) - value(o[:, :-1])
    want = float((adv(obs, r, d) - adv(base, r_base, d0)).mean())
    assert float(m["guide_advantage_gain"]) == pytest.approx(want, rel=1e-5)
    same = wm_error.guide_effect(normalize, value, gamma, base, full(r_base), d0, base, full(r_base), d0)
    assert float(same["guide_state_shift"]) == 0.0 and float(same["guide_advantage_gain"]) == 0.0


@functools.lru_cache(maxsize=None)
def _step_after_restores():
    """One MJX compile shared by the restore tests: after 5 steps of HalfCheetah, one more
    step from (the original state, the state restored by `envs.restore`, the state rebuilt
    from q and qd alone by `pipeline_init`)."""
    env = envs.make_env("halfcheetah", "mjx")
    carry = envs.reset(env, jax.random.PRNGKey(0))
    acts = jax.random.uniform(jax.random.PRNGKey(1), (6, env.action_size), minval=-1, maxval=1)

    @jax.jit
    def go(state):
        state = jax.lax.fori_loop(0, 5, lambda i, s: env.step(s, acts[i]), state)
        back = envs.restore(env, carry.state, envs.physics_state(state), state.obs)
        q_only = state.replace(pipeline_state=env.pipeline_init(state.pipeline_state.q, state.pipeline_state.qd))
        return env.step(state, acts[5]), env.step(back, acts[5]), env.step(q_only, acts[5])

    return go(carry.state)


def test_mjx_step_makes_no_lapack_calls_on_cpu():
    """MJX's Cholesky factorisations and triangular solves lower to XLA's own ops on the
    CPU, not to LAPACK calls that can deadlock XLA's thread pool (agdjax/cpu_linalg.py)."""
    if jax.default_backend() != "cpu":
        pytest.skip("the rerouting concerns the CPU lowering only")
    env = envs.make_env("halfcheetah", "mjx")
    state = envs.reset(env, jax.random.PRNGKey(0)).state
    text = jax.jit(env.step).lower(state, jnp.zeros(env.action_size)).as_text()
    assert "stablehlo.cholesky" in text and "stablehlo.triangular_solve" in text
    assert "lapack" not in text


def test_restore_puts_mjx_back_exactly():
    """Stepping a restored state gives the same next observation AND reward as stepping the
    original (the reward needs the stored body positions, which lag q by one substep)."""
    a, b, _ = _step_after_restores()
    np.testing.assert_allclose(np.asarray(a.obs), np.asarray(b.obs), atol=1e-4)
    np.testing.assert_allclose(float(a.reward), float(b.reward), atol=1e-4)
    ps = a.pipeline_state
    assert envs.physics_state(a).shape == (ps.q.shape[0] + ps.qd.shape[0] + ps.x.pos.size,)


def test_restore_needs_the_stored_body_positions():
    """q and qd alone (body positions recomputed by pipeline_init) change the first reward:
    Brax's reward uses the previous body positions, which lag q by one substep."""
    a, _, q_only = _step_after_restores()
    exact, q_only = a.reward, q_only.reward
    assert abs(float(exact) - float(q_only)) > 1e-3, (float(exact), float(q_only))


def test_replay_keeps_the_simulator_state_with_each_transition():
    rep = rb.init(2, 8, 3, 1, phys_dim=4)
    for i in range(5):
        tr = envs.Transition(jnp.full((2, 3), i), jnp.zeros((2, 1)), jnp.zeros(2), jnp.zeros((2, 3)),
                             jnp.zeros(2), jnp.zeros(2))
        rep = rb.add(rep, tr, jnp.full((2, 4), 10.0 + i))
    obs, phys = rb.sample_starts(rep, jax.random.PRNGKey(0), 64)
    np.testing.assert_array_equal(np.asarray(phys), np.repeat(np.asarray(obs[:, :1]), 4, 1) + 10.0)
    assert len(np.unique(np.asarray(obs[:, 0]))) == 5  # every stored step was drawn


@pytest.fixture(scope="module")
def smoke_oracle(tmp_path_factory):
    cfg = make_config("halfcheetah", "smoke", guide="sag", backend="positional", imagination="oracle")
    logdir = str(tmp_path_factory.mktemp("oracle"))
    return cfg, loop.run(cfg, [0], logdir, progress=False, checkpoint_every=32), logdir


def test_evaluations_log_the_world_model_error(smoke_oracle):
    _, (_, rows, _), _ = smoke_oracle
    at_eval = [r for r in rows if "eval_return" in r]
    assert len(at_eval) == 3
    for r in at_eval:
        for k in wm_error.WM_METRICS:
            low = {"wm_advantage_corr": -1.0, "wm_action_cost_ratio": -math.inf,
                   "guide_advantage_gain": -math.inf}.get(k, 0.0)  # the rest: squared errors and a shift
            assert math.isfinite(r[k]) and r[k] >= low, (k, r)
        assert r["wm_advantage_corr"] <= 1.0
    assert not any("wm_state_error_1" in r for r in rows if "eval_return" not in r)


def test_oracle_imagination_trains_on_the_simulator(smoke_oracle):
    """In oracle mode the learner's trajectories are simulator rollouts: the one-step reward of
    row k equals the simulator's reward from the restored state with the same action."""
    cfg, (state, rows, _), _ = smoke_oracle
    assert math.isfinite(rows[-1]["actor_loss"]) and math.isfinite(rows[-1]["policy_std"])
    prog = loop._compiled(cfg, 1).prog
    one = jax.tree.map(lambda x: x[0], state)
    im = jax.jit(prog.phases["imagine"])(one, jax.random.PRNGKey(3))
    assert im.obs.shape == (cfg.agent_batch, cfg.horizon, prog.obs_dim)
    env = envs.make_env(cfg.task, cfg.backend)
    # same start states as `imagine` drew (same key split), stepped once with the same action
    k_s, _ = jax.random.split(jax.random.PRNGKey(3))
    s0, phys = rb.sample_starts(one.replay, k_s, cfg.agent_batch)
    np.testing.assert_allclose(np.asarray(s0), np.asarray(im.obs[:, 0]))
    template = jax.tree.map(lambda x: x[0], one.env.state)
    replay_open_loop = jax.jit(lambda p, o, a: envs.rollout(env, template, p, o, lambda x, _: x, a,
                                                            action_bound=cfg.env_action_bound))
    o, _, r, _ = replay_open_loop(phys, s0, jnp.swapaxes(im.action[:, :1], 0, 1))
    np.testing.assert_allclose(np.asarray(o[:, 1]), np.asarray(im.obs[:, 1]), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(r[:, 0]), np.asarray(im.reward[:, 0]), rtol=1e-4, atol=1e-4)


def test_wm_error_command_compares_guides(smoke_oracle, capsys):
    _, _, logdir = smoke_oracle
    wm_error.main([logdir, "--guides=none,sag", "--batch=8"])
    out = capsys.readouterr().out
    assert "| none |" in out and "| sag |" in out
    with open(f"{logdir}/wm_error.json") as f:
        res = json.load(f)
    assert set(res) == {"none", "sag", "_checkpoint"}
    for g in ("none", "sag"):
        assert all(math.isfinite(v) for v in res[g]["wm_state_error_last"])
    for bad, needle in (("--guides=foo", "--guides='foo'"), ("--guides=reward", "--guide=reward"),
                        ("--batch=0", "--batch=0")):
        with pytest.raises(SystemExit) as e:
            wm_error.main([logdir, bad])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1, err


def test_evaluate_command_reproduces_the_logged_evaluation_and_adds_the_sampled_one(smoke_oracle, tmp_path,
                                                                                   capsys):
    """python -m agdjax.evaluate on the run's checkpoints: at the run's key and episodes the
    mean action's return is the logged eval_return of that step (the compile's rounding
    apart); the sampled actions' return differs; the final checkpoint is flagged as evaluated
    at another key. Bad input: exit 2 with one line."""
    from agdjax import evaluate
    _, _, logdir = smoke_oracle
    res = evaluate.checkpoint_evaluations(logdir)
    same = [r for r in res["rows"] if r["same_key"] and r["logged_eval_return"] is not None]
    assert len(same) >= 2 and res["episodes"] == 2
    for r in same:
        assert r["eval_return"] == pytest.approx(r["logged_eval_return"], rel=1e-3, abs=1e-3), r
        assert abs(r["eval_return_sampled"] - r["eval_return"]) > 1e-3, r
    assert not res["rows"][-1]["same_key"] and res["rows"][-1]["env_steps"] == 64
    assert evaluate.main([logdir, "--episodes=3"]) == 0
    assert json.load(open(f"{logdir}/evaluations.json"))["episodes"] == 3
    assert "eval_return_sampled" in capsys.readouterr().out
    for argv, what in (([logdir, "--episodes=0"], "--episodes=0"), ([str(tmp_path)], "config.json")):
        assert evaluate.main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and what in err, err


def test_respacing_benchmark_on_a_checkpoint(smoke_oracle, capsys):
    """benchmarks.respacing: per K, imagination speed and the world-model error of the run's
    checkpoint (finite, written to JSON and a table); K outside 1..T is refused."""
    from benchmarks import respacing
    _, _, logdir = smoke_oracle
    assert respacing.main([logdir, "--steps=4,2", "--batch=4", "--repeats=1"]) == 0
    with open(f"{logdir}/respacing.json") as f:
        res = json.load(f)
    assert set(res) == {"4", "2", "_checkpoint"}
    for k in ("4", "2"):
        assert res[k]["transitions_per_s"] > 0 and math.isfinite(res[k]["wm_state_error_1"])
    assert res["4"]["wm_state_error_1"] != res["2"]["wm_state_error_1"]
    assert "| 2 |" in capsys.readouterr().out
    assert respacing.main([logdir, "--steps=5"]) == 2


@struct.dataclass
class _ToyState:
    """A stand-in for TrainState in make_run_chunk: a key, a replay written in place, a step."""
    key: jax.Array
    replay: jax.Array
    step: jax.Array


def _toy_state():
    return _ToyState(jax.random.PRNGKey(3), jnp.arange(1.0, 6.0), jnp.int32(0))


def _toy_train(state, before):
    """Writes a key-dependent value into the replay slot of this step (in place, as collection
    does), then moves the key on."""
    k_val, key = jax.random.split(state.key)
    replay = state.replay.at[state.step % state.replay.shape[0]].set(jax.random.uniform(k_val) + before)
    return state.replace(key=key, replay=replay, step=state.step + 1), {"loss": replay.sum()}


def _toy_reads(state, key):
    """The evaluation's read of the replay: a key-weighted sum of every slot, so that any other
    replay or key gives another value."""
    return state.replay @ jax.random.normal(key, state.replay.shape)


def _toy_eval(state, key, reads):
    return {"eval_return": 1000.0 * reads + jax.random.uniform(key)}


def test_evaluations_inside_a_chunk_read_the_state_they_evaluate():
    """train.make_run_chunk carries the evaluation's replay reads of iteration i+1 from the end
    of iteration i (the replay copies they avoid: test_memory). Whatever the chunk length, an
    evaluation must read the replay of the state its iteration starts from, at the evaluation's
    own key (the first half of that state's key), exactly as reading at the iteration's start
    would: one chunk of 4 iterations, 4 chunks of 1, and a plain Python loop agree."""
    def run(iters_per_chunk):
        cfg = make_config("halfcheetah", "smoke", total_env_steps=64, eval_every=16, iters_per_chunk=iters_per_chunk)
        assert cfg.env_steps_per_iter == 16 and cfg.n_iters == 4
        chunk = jax.jit(train.make_run_chunk(cfg, _toy_eval, _toy_train, _toy_reads))
        state, evals = _toy_state(), []
        for first in range(0, 4, iters_per_chunk):
            state, m = chunk(state, jnp.int32(first))
            evals += [float(x) for x in np.asarray(m["eval_return"])]
        return evals

    state, expected = _toy_state(), []
    for i in range(4):  # the schedule, read at each iteration's start
        eval_key, key = jax.random.split(state.key)
        expected.append(float(_toy_eval(state, eval_key, _toy_reads(state, eval_key))["eval_return"]))
        state, _ = _toy_train(state.replace(key=key), i * 16)
    assert len(set(expected)) == 4
    np.testing.assert_allclose(run(4), expected, rtol=1e-6)
    np.testing.assert_allclose(run(1), expected, rtol=1e-6)


def test_the_evaluation_draws_its_start_states_as_the_wm_error_phase(smoke_oracle):
    """The world-model error an evaluation logs is the wm_error phase's at the evaluation's key
    (train.eval_keys): at step 0, from the initial state, at the first half of its key."""
    cfg, (_, rows, _), _ = smoke_oracle
    prog, init, _ = loop.compile_program(cfg, 1, jax.devices()[:1])
    state0 = jax.tree.map(lambda x: x[0], init(*loop.member_inputs(cfg, [{"seed": 0}])))
    k_wm = jax.random.split(jax.random.split(state0.key)[0])[1]
    direct = jax.jit(prog.phases["wm_error"])(state0, k_wm)
    logged = next(r for r in rows if r["env_steps"] == 0 and r["seed"] == 0)
    for k in wm_error.WM_METRICS:
        np.testing.assert_allclose(logged[k], float(direct[k]), rtol=1e-5, atol=1e-6, err_msg=k)


def test_the_guide_effect_compares_the_same_noise_with_and_without_the_guide(smoke_oracle):
    """guide_state_shift / guide_advantage_gain of the wm_error phase are those of the run's
    guided samples against train.diffusion_imagine(..., guide='none') at the same key; with
    c = 0 they are exactly 0."""
    cfg, _, _ = smoke_oracle
    prog, init, _ = loop.compile_program(cfg, 1, jax.devices()[:1])
    state0 = jax.tree.map(lambda x: x[0], init(*loop.member_inputs(cfg, [{"seed": 0}])))
    key = jax.random.PRNGKey(7)
    m = jax.jit(prog.phases["wm_error"])(state0, key)
    setup = train.make_setup(cfg)
    k_s, k_im = jax.random.split(key)
    s0, _ = rb.sample_starts(state0.replay, k_s, cfg.wm_error_batch)
    guided = train.diffusion_imagine(setup, state0, k_im, s0)
    base = train.diffusion_imagine(setup, state0, k_im, s0, guide="none")
    value = lambda o: setup.mods.critic.apply(state0.agent.critic, o)
    want = wm_error.guide_effect(state0.norm.obs.normalize, value, cfg.gamma, guided.obs, guided.reward,
                                 guided.terminal, base.obs, base.reward, base.terminal)
    assert float(m["guide_state_shift"]) > 0.0
    for k in ("guide_state_shift", "guide_advantage_gain"):
        np.testing.assert_allclose(float(m[k]), float(want[k]), rtol=1e-4, atol=1e-7, err_msg=k)
    off = train.make_setup(dataclasses.replace(cfg, guide_scale=0.0))
    m0 = jax.jit(lambda st, k: train.wm_error_phase(off, st, k))(state0, key)
    assert float(m0["guide_state_shift"]) == 0.0 and float(m0["guide_advantage_gain"]) == 0.0
