"""The compiled training program: TrainState, one iteration, `make_train`.

One iteration (DESIGN §2): [evaluate if due] -> collect n_envs * steps_per_iter real steps ->
replay + normaliser -> diffusion updates -> guided imagination + agent updates. `run_chunk`
is a `lax.scan` over iterations; the iteration index is passed un-batched so that, under
`vmap` over seeds, the schedule's `lax.cond`s stay real branches (no wasted work).
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from agdjax import diffusion, envs, normalize, replay as rb
from agdjax.agents import a2c, ppo, trpo
from agdjax.config import Config
from agdjax.guidance import action_z_std, delta_update, one_step_advantage
from agdjax.networks import Actor, Critic, ResidualMLPDenoiser, RewardModel, policy_dist
from agdjax.sampler import Imagined, SamplerFns, sample
from agdjax.wm_error import WM_METRICS, action_cost_ratio, advantage_corr, guide_effect, trajectory_errors

METRICS = ("diffusion_loss", "reward_model_loss", "actor_loss", "critic_loss", "imagined_advantage",
           "action_guidance_scale", "logprob_change", "actor_lr", "kl", "train_return", "policy_std",
           "critic_explained_variance", "guide_step_ratio", "action_z_std", "policy_mean_abs")
# computed by the evaluation phase, logged at its env step. eval_return: the mean action (the
# reference's evaluation, use_mean=True); eval_return_sampled: actions sampled from the policy,
# from the same start states (the policy that A2C trains; a diagnostic)
EVAL_METRICS = ("eval_return", "eval_return_sampled") + WM_METRICS


@struct.dataclass
class TrainState:
    """All per-seed state of one run (a pytree; vmapped over seeds)."""
    env: envs.EnvCarry  # leaves [n_envs, ...]
    episode_return: jax.Array  # [n_envs], running return of the current training episode
    last_return: jax.Array  # [], mean return of the training episodes finished last iteration
    replay: rb.Replay
    norm: normalize.Normalizer
    denoiser: dict
    denoiser_ema: dict
    denoiser_opt: optax.OptState
    reward_model: dict
    reward_opt: optax.OptState
    agent: object  # a2c.A2CState | ppo.PPOState | trpo.TRPOState (cfg.agent)
    log_delta: jax.Array  # [], log of the action-guidance scale delta
    diffusion_steps: jax.Array  # int32 []
    key: jax.Array


class Program(NamedTuple):
    """The pure functions of one run. init(key) -> TrainState (after the random prefill);
    run_chunk(state, first_iter) -> (state, metrics dict of [iters_per_chunk] arrays)."""
    init: callable
    run_chunk: callable
    cfg: Config
    obs_dim: int
    act_dim: int
    phases: dict  # name -> (state, key) -> ..., the parts of one iteration, for profiling


class Modules(NamedTuple):
    """The networks. The `guide_*` ones are the actor, critic and reward model as the sampler
    calls them: the same parameters, matmuls at the denoiser's precision (issue 11: the guide
    costs what the denoiser does); they are never trained."""
    actor: Actor
    critic: Critic
    denoiser: ResidualMLPDenoiser
    reward_model: RewardModel
    guide_actor: Actor
    guide_critic: Critic
    guide_reward_model: RewardModel


def make_modules(cfg: Config, act_dim: int) -> Modules:
    dtype = jnp.bfloat16 if cfg.denoiser_dtype == "bfloat16" else jnp.float32
    actor = lambda dt: Actor(act_dim, cfg.hidden, cfg.init_std, cfg.min_std, dtype=dt)
    return Modules(
        actor(jnp.float32), Critic(cfg.hidden),
        ResidualMLPDenoiser(cfg.denoiser_hidden, cfg.denoiser_blocks, dtype=dtype),
        RewardModel(cfg.reward_model_hidden),
        actor(dtype), Critic(cfg.hidden, dtype=dtype), RewardModel(cfg.reward_model_hidden, dtype=dtype),
    )


def make_run_chunk(cfg: Config, eval_phase, train_iteration, eval_reads=lambda state, key: None):
    """The schedule every program shares (DESIGN §2): iteration i evaluates if
    (i < n_iters and i*E % eval_every == 0) or i == n_iters, then trains if i < n_iters
    (metrics NaN otherwise); E = cfg.env_steps_per_iter.

    eval_phase(state, key, reads) -> {name: float32} (`eval_return` at least), where reads =
    eval_reads(state, key) is what the evaluation reads from the replay (small: a few start
    states). train_iteration(state, before) -> (state, {name: float32}), `before` the env steps
    done before the iteration; state.key is split for the evaluation. Returns
    run_chunk(state, first_iter) -> (state, {name: [L]}): a `lax.scan` over L =
    cfg.iters_per_chunk iterations; `first_iter` is an int32 scalar, not vmapped, so the
    schedule's conds stay real branches under vmap.

    The reads of iteration i+1 are taken at the end of iteration i, from the same state (so
    the numbers do not change) and carried in the scan: read at the start of iteration i+1,
    XLA cannot order them before the training's in-place writes to the replay and copies the
    read buffers whole at every iteration (3 copies of replay.obs and replay.physics).
    """
    E = cfg.env_steps_per_iter

    def with_reads(state):
        """(state, the reads of the iteration that starts from it, at its eval_key)."""
        return state, eval_reads(state, jax.random.split(state.key)[0])  # the next iteration's eval_key

    def iteration(carry, i):
        state, reads = carry
        before = i * E
        do_eval = (i < cfg.n_iters) & (before % cfg.eval_every == 0) | (i == cfg.n_iters)
        eval_key, key = jax.random.split(state.key)
        state = state.replace(key=key)
        nan_like = lambda shapes: jax.tree.map(lambda x: jnp.full(x.shape, jnp.nan, x.dtype), shapes)
        eval_shapes = jax.eval_shape(eval_phase, state, eval_key, reads)
        ev = jax.lax.cond(do_eval, lambda: eval_phase(state, eval_key, reads), lambda: nan_like(eval_shapes))
        shapes = jax.eval_shape(train_iteration, state, before)[1]
        skip = lambda s, b: (s, nan_like(shapes))
        state, m = jax.lax.cond(i < cfg.n_iters, train_iteration, skip, state, before)
        return with_reads(state), dict(m, **ev)

    def run_chunk(state, first_iter):
        iters = first_iter + jnp.arange(cfg.iters_per_chunk, dtype=jnp.int32)
        (state, _), metrics = jax.lax.scan(iteration, with_reads(state), iters)
        return state, metrics

    return run_chunk


class Setup(NamedTuple):
    """What every phase of a run reads and never changes (built once by `make_setup`): the
    config, the environment, the networks, the diffusion schedules and the optimisers."""
    cfg: Config
    env: object  # brax Env
    mods: Modules
    sched: diffusion.Schedule  # the T-step training chain
    sample_sched: diffusion.Schedule  # imagination's chain (respaced to cfg.n_sampling_steps)
    sample_timesteps: jax.Array  # int32 [K], the T-chain step each sampling step stands for
    denoiser_tx: optax.GradientTransformation
    reward_tx: optax.GradientTransformation
    nets: a2c.Nets
    env_step: callable  # (EnvCarry, actions [n_envs, A]) -> (EnvCarry, Transition)
    obs_dim: int
    act_dim: int
    phys_dim: int  # size of the stored physics state; 0 when the replay keeps none


def make_setup(cfg: Config) -> Setup:
    """The Setup of cfg (cfg's SWEEPABLE values may be traced: Config.with_hparams)."""
    env = envs.make_env(cfg.task, cfg.backend)
    obs_dim, act_dim = envs.observation_size(env), env.action_size
    mods = make_modules(cfg, act_dim)
    sched = diffusion.cosine_schedule(cfg.n_diffusion_steps, cfg.tau)
    sample_sched, sample_timesteps = diffusion.respace(sched, cfg.n_sampling_steps)
    one_env = jax.eval_shape(functools.partial(envs.reset, env), jax.random.PRNGKey(0)).state
    uses_physics = cfg.wm_error_batch > 0 or cfg.imagination == "oracle"  # else the replay keeps none
    phys_dim = jax.eval_shape(envs.physics_state, one_env).shape[0] if uses_physics else 0
    return Setup(cfg, env, mods, sched, sample_sched, sample_timesteps,
                 denoiser_tx=optax.adam(cfg.diffusion_lr), reward_tx=optax.adam(cfg.diffusion_lr),
                 nets=a2c.Nets(mods.actor.apply, mods.critic.apply),
                 env_step=functools.partial(envs.step_batch, env, episode_length=cfg.episode_length,
                                            action_bound=cfg.env_action_bound),
                 obs_dim=obs_dim, act_dim=act_dim, phys_dim=phys_dim)


def make_train(cfg: Config) -> Program:
    """The program of one run of cfg: init (`init_state`), run_chunk (`make_run_chunk` over
    `evaluate` and `train_iteration`) and the phases of one iteration (`collect_phase`, ...),
    each a function below with the run's Setup bound."""
    setup = make_setup(cfg)
    bind = lambda f: functools.partial(f, setup)
    run_chunk = make_run_chunk(cfg, bind(evaluate), bind(train_iteration), bind(eval_reads))
    phases = {"collect": bind(collect_phase), "diffusion": bind(diffusion_phase), "agent": bind(agent_phase),
              "eval": bind(eval_phase), "imagine": bind(imagine), "wm_error": bind(wm_error_phase)}
    return Program(bind(init_state), run_chunk, cfg, setup.obs_dim, setup.act_dim, phases)


# ---------------------------------------------------------------------- init + prefill
def init_state(setup: Setup, key) -> TrainState:
    """A new run's state after the random prefill (cfg.prefill_steps uniform actions)."""
    cfg, mods, obs_dim, act_dim = setup.cfg, setup.mods, setup.obs_dim, setup.act_dim
    k_env, k_a, k_c, k_d, k_r, k_pre, k_ag, key = jax.random.split(key, 8)
    env_carry = jax.vmap(functools.partial(envs.reset, setup.env))(jax.random.split(k_env, cfg.n_envs))
    o = jnp.zeros((1, obs_dim))
    actor_p = mods.actor.init(k_a, o)
    critic_p = mods.critic.init(k_c, o)
    den_p = mods.denoiser.init(k_d, jnp.zeros((1, cfg.horizon, obs_dim + 2)),
                               jnp.zeros((1, cfg.horizon, act_dim)), jnp.zeros((1,), jnp.int32))
    rew_p = mods.reward_model.init(k_r, o, jnp.zeros((1, act_dim)))
    state = TrainState(
        env=env_carry, episode_return=jnp.zeros((cfg.n_envs,)), last_return=jnp.float32(jnp.nan),
        replay=rb.init(cfg.n_envs, cfg.capacity_per_env, obs_dim, act_dim, setup.phys_dim),
        norm=normalize.init(obs_dim, act_dim),
        denoiser=den_p, denoiser_ema=den_p, denoiser_opt=setup.denoiser_tx.init(den_p),
        reward_model=rew_p, reward_opt=setup.reward_tx.init(rew_p),
        agent=init_agent(cfg, actor_p, critic_p, k_ag),
        log_delta=jnp.log(jnp.float32(cfg.delta_init)),
        diffusion_steps=jnp.zeros((), jnp.int32), key=key)
    random_policy = lambda k, obs: jax.random.uniform(k, (cfg.n_envs, act_dim), minval=-1.0, maxval=1.0)
    return collect(setup, state, k_pre, random_policy, cfg.prefill_steps // cfg.n_envs)


# ---------------------------------------------------------------------- real data
def collect(setup: Setup, state: TrainState, key, policy, n_steps: int) -> TrainState:
    """n_steps steps of the n_envs environments with policy(key, obs [n_envs, obs_dim]) ->
    actions [n_envs, act_dim], into the replay and the normaliser; also carries the running
    episode returns and sets last_return (mean return of the episodes finished, else kept)."""
    def body(c, k):
        env_carry, ep_ret, rep = c
        action = policy(k, env_carry.state.obs)
        physics = jax.vmap(envs.physics_state)(env_carry.state) if setup.phys_dim else None
        env_carry, tr = setup.env_step(env_carry, action)
        ended = (tr.terminal + tr.truncated) > 0
        ep_ret = ep_ret + tr.reward
        finished = (jnp.where(ended, ep_ret, 0.0).sum(), ended.sum())
        return (env_carry, jnp.where(ended, 0.0, ep_ret), rb.add(rep, tr, physics)), (tr, finished)

    init_c = (state.env, state.episode_return, state.replay)
    (env_carry, ep_ret, rep), (trs, (ret_sum, n_done)) = jax.lax.scan(
        body, init_c, jax.random.split(key, n_steps))
    flat = lambda x: x.reshape((-1,) + x.shape[2:])
    norm = normalize.update(state.norm, flat(trs.obs), flat(trs.action), flat(trs.reward))
    n = n_done.sum()
    last = jnp.where(n > 0, ret_sum.sum() / jnp.maximum(n, 1), state.last_return)
    return state.replace(env=env_carry, episode_return=ep_ret, replay=rep, norm=norm, last_return=last)


def policy_sample(setup: Setup, actor_params):
    """policy(key, obs [n, obs_dim]) -> actions [n, act_dim] sampled from the actor (unclipped)."""
    def policy(k, obs):
        mu, sigma = setup.mods.actor.apply(actor_params, obs)
        return policy_dist(mu, sigma).sample(seed=k)
    return policy


def policy_mean(setup: Setup, actor_params):
    """policy(obs [n, obs_dim]) -> the actor's mean action [n, act_dim] (what evaluation runs)."""
    return lambda obs: setup.mods.actor.apply(actor_params, obs)[0]


# ---------------------------------------------------------------------- world model
def diffusion_update(setup: Setup, state: TrainState, key):
    """One denoiser update (x0 loss, DESIGN §1 'Denoiser') on a batch of replay windows, its EMA, and the
    reward model's update when the guide needs it -> (state, (loss, reward-model loss))."""
    cfg, mods = setup.cfg, setup.mods
    k_w, k_loss = jax.random.split(key)
    w = rb.sample_windows(state.replay, k_w, cfg.diffusion_batch, cfg.horizon)
    x0 = normalize.pack(state.norm, w.obs, w.reward, w.terminal)
    actions = state.norm.action.normalize(w.action)

    def loss_fn(p):
        denoise = lambda x, a, t: mods.denoiser.apply(p, x, a, t)
        return diffusion.x0_loss(denoise, setup.sched, x0, actions, k_loss, setup.obs_dim, cfg.scale_action_input)

    loss, grad = jax.value_and_grad(loss_fn)(state.denoiser)
    upd, opt = setup.denoiser_tx.update(grad, state.denoiser_opt, state.denoiser)
    params = optax.apply_updates(state.denoiser, upd)
    step = state.diffusion_steps + 1
    ema = ema_update(cfg, state.denoiser_ema, params, step)
    state = state.replace(denoiser=params, denoiser_ema=ema, denoiser_opt=opt, diffusion_steps=step)
    r_loss = jnp.float32(jnp.nan)
    if cfg.guide == "reward":  # static: the reward model exists only for the reward guide
        state, r_loss = reward_model_update(setup, state, w)
    return state, (loss, r_loss)


def ema_update(cfg: Config, ema, params, step):
    """The denoiser's EMA after update `step`: the parameters before cfg.ema_start, then mixed
    every cfg.ema_every updates with decay cfg.ema_decay."""
    before_start = step < cfg.ema_start
    do = (step % cfg.ema_every) == 0
    mixed = optax.incremental_update(params, ema, 1.0 - cfg.ema_decay)
    return jax.tree.map(lambda p, e, m: jnp.where(before_start, p, jnp.where(do, m, e)), params, ema, mixed)


def reward_model_update(setup: Setup, state: TrainState, w):
    """One Adam step of the reward model (the `reward` guide's) on replay windows w (obs
    [B, H, obs_dim], action [B, H, act_dim], reward and terminal [B, H]): squared error of the
    raw reward on non-terminal steps -> (state, loss)."""
    def loss_fn(p):
        return ((setup.mods.reward_model.apply(p, w.obs, w.action) - w.reward) ** 2 * (1 - w.terminal)).mean()
    loss, grad = jax.value_and_grad(loss_fn)(state.reward_model)
    upd, opt = setup.reward_tx.update(grad, state.reward_opt, state.reward_model)
    return state.replace(reward_model=optax.apply_updates(state.reward_model, upd), reward_opt=opt), loss


# ---------------------------------------------------------------------- imagination
def diffusion_imagine(setup: Setup, state: TrainState, key, s0, guide: str | None = None) -> Imagined:
    """Guided reverse sampling from start states s0 [B, obs_dim] (raw) -> Imagined; `guide`
    'none' drops the run's state guide (same noise for the same key), None keeps it."""
    cfg, mods, ag = setup.cfg, setup.mods, state.agent
    guide, scale = (cfg.guide, cfg.c) if guide is None else (guide, 0.0)
    fns = SamplerFns(
        denoise=lambda x, a, t: mods.denoiser.apply(state.denoiser_ema, x, a, t),
        actor=lambda o: mods.guide_actor.apply(ag.actor, o),
        value=lambda o: mods.guide_critic.apply(ag.critic, o),
        reward=lambda o, a: mods.guide_reward_model.apply(state.reward_model, o, a))
    return sample(fns, setup.sample_sched, state.norm, s0, key, delta=jnp.exp(state.log_delta),
                  guide=guide, guide_scale=scale, gamma=cfg.gamma, act_dim=setup.act_dim,
                  clip_sigmas=cfg.action_clip_sigmas, clamp_last_steps=cfg.clamp_last_steps,
                  clamp_value=cfg.clamp_value, horizon=cfg.horizon,
                  action_bound=envs.REPLAY_ACTION_BOUND,  # what the replay stores
                  scale_actions=cfg.scale_action_input, timesteps=setup.sample_timesteps,
                  guide_last_row=cfg.guide_last_row)


def oracle_imagine(setup: Setup, state: TrainState, key, s0, physics) -> Imagined:
    """Diagnostic (`imagination='oracle'`): H-step rollouts of the current policy in the
    real simulator from the replayed start states, in place of diffusion samples."""
    template = jax.tree.map(lambda x: x[0], state.env.state)
    actor = lambda o: setup.mods.actor.apply(state.agent.actor, o)
    policy = lambda k, o: policy_dist(*actor(o)).sample(seed=k)
    obs, action, reward, term = envs.rollout(setup.env, template, physics, s0, policy,
                                             jax.random.split(key, setup.cfg.horizon - 1),
                                             action_bound=setup.cfg.env_action_bound)
    mu, sigma = actor(obs)
    pad = lambda x: jnp.concatenate([x, jnp.zeros_like(x[:, :1])], 1)  # row H-1 is never trained on
    return Imagined(obs, jnp.concatenate([action, mu[:, -1:]], 1), pad(reward), pad(term), mu, sigma,
                    jnp.float32(0.0))


def imagine(setup: Setup, state: TrainState, key) -> Imagined:
    """cfg.agent_batch imagined trajectories from replayed start states."""
    k_s, k_sample = jax.random.split(key)
    s0, physics = rb.sample_starts(state.replay, k_s, setup.cfg.agent_batch)
    if setup.cfg.imagination == "oracle":
        return oracle_imagine(setup, state, k_sample, s0, physics)
    return diffusion_imagine(setup, state, k_sample, s0)


def wm_error_phase(setup: Setup, state: TrainState, key):
    """World-model error against the simulator (agdjax/wm_error.py) on cfg.wm_error_batch
    replayed start states, with the run's sampler and guide."""
    k_s, k_im = jax.random.split(key)
    return wm_error_from(setup, state, k_im, rb.sample_starts(state.replay, k_s, setup.cfg.wm_error_batch))


def wm_error_from(setup: Setup, state: TrainState, key, starts):
    """wm_error_phase from given start states: (obs [B, obs_dim], physics [B, n_phys])."""
    s0, physics = starts
    im = diffusion_imagine(setup, state, key, s0)
    template = jax.tree.map(lambda x: x[0], state.env.state)
    actions = jnp.swapaxes(im.action[:, :-1], 0, 1)  # [H-1, B, A], replayed open-loop
    bound = setup.cfg.env_action_bound
    sim_obs, _, sim_reward, sim_term = envs.rollout(setup.env, template, physics, s0, lambda a, o: a, actions,
                                                    action_bound=bound)
    value = lambda o: setup.mods.critic.apply(state.agent.critic, o)
    corr = advantage_corr(value, setup.cfg.gamma, im.obs, im.reward[:, :-1], im.terminal,
                          sim_obs, sim_reward, sim_term)
    if setup.cfg.guide == "none":
        effect = {"guide_state_shift": jnp.float32(0.0), "guide_advantage_gain": jnp.float32(0.0)}
    else:  # the same start states and noise without the state guide
        base = diffusion_imagine(setup, state, key, s0, guide="none")
        effect = guide_effect(state.norm.obs.normalize, value, setup.cfg.gamma, im.obs, im.reward, im.terminal,
                              base.obs, base.reward, base.terminal)
    return dict(trajectory_errors(im.obs, im.reward[:, :-1], sim_obs, sim_reward, im.terminal),
                wm_advantage_corr=corr, **effect,
                wm_action_cost_ratio=action_cost_ratio(  # on the actions the simulator was given
                    envs.clip_action(im.action[:, :-1], bound),
                    im.reward[:, :-1], sim_reward, im.terminal, sim_term))


# ---------------------------------------------------------------------- agent
def agent_update(setup: Setup, state: TrainState, key):
    """One learner update on a fresh imagined batch, and the delta rule -> (state, metrics)."""
    cfg = setup.cfg
    im = imagine(setup, state, key)
    value = lambda o: setup.mods.critic.apply(state.agent.critic, o)
    adv = one_step_advantage(value, im.obs, im.reward, im.terminal, cfg.gamma).mean()
    agent, m = LEARNERS[cfg.agent].update(cfg, setup.nets, state.agent, im.obs, im.action, im.reward, im.terminal)
    m = {k: m.get(k, jnp.float32(jnp.nan)) for k in _AGENT_METRICS}  # same keys for every learner
    z_std = action_z_std(im.action, im.policy_mean, im.policy_std)
    log_delta = delta_update(state.log_delta, z_std, cfg.lr_delta)
    m = dict(m, imagined_advantage=adv, action_guidance_scale=jnp.exp(state.log_delta),
             policy_std=im.policy_std[:, :-1].mean(), guide_step_ratio=im.guide_step_ratio,
             action_z_std=z_std, policy_mean_abs=jnp.abs(im.policy_mean[:, :-1]).mean())
    return state.replace(agent=agent, log_delta=log_delta), m


# ---------------------------------------------------------------------- one iteration
def nan_metrics():
    """{name: NaN} for every train metric: what an iteration logs for the parts it skips."""
    return {k: jnp.float32(jnp.nan) for k in METRICS}


def collect_phase(setup: Setup, state: TrainState, key):
    """(state, key) -> state after cfg.steps_per_iter steps of every env with the current policy."""
    return collect(setup, state, key, policy_sample(setup, state.agent.actor), setup.cfg.steps_per_iter)


def diffusion_phase(setup: Setup, state: TrainState, key):
    """(state, key) -> (state, {diffusion_loss, reward_model_loss}: means over the
    cfg.diffusion_updates_per_iter updates)."""
    state, (d_loss, r_loss) = jax.lax.scan(
        functools.partial(diffusion_update, setup), state,
        jax.random.split(key, setup.cfg.diffusion_updates_per_iter))
    return state, {"diffusion_loss": d_loss.mean(), "reward_model_loss": r_loss.mean()}


def agent_phase(setup: Setup, state: TrainState, key):
    """(state, key) -> (state, the agent metrics: means over the cfg.agent_updates_per_iter
    updates, each on a fresh imagined batch)."""
    state, m = jax.lax.scan(functools.partial(agent_update, setup), state,
                            jax.random.split(key, setup.cfg.agent_updates_per_iter))
    return state, jax.tree.map(jnp.mean, m)


def policy_evaluations(env, mean_fn, sample_fn, key, cfg: Config):
    """{eval_return: the mean action's return, eval_return_sampled: the sampled actions'} over
    cfg.eval_episodes episodes from the same start states (envs.evaluate at the same `key`)."""
    ev = lambda fn, sampled: envs.evaluate(env, fn, key, cfg.eval_episodes, cfg.episode_length,
                                           action_bound=cfg.env_action_bound, sampled=sampled)
    return {"eval_return": ev(mean_fn, False), "eval_return_sampled": ev(sample_fn, True)}


def eval_keys(key):
    """(episodes, start states, imagination) keys of the evaluation at `key`: the last two
    are wm_error_phase's split of the evaluation's second key."""
    k_ev, k_wm = jax.random.split(key)
    return (k_ev, *jax.random.split(k_wm))


def eval_reads(setup: Setup, state: TrainState, key):
    """The evaluation's reads of the replay: the world-model error's start states (None
    when it is off)."""
    if setup.cfg.wm_error_batch == 0:
        return None
    return rb.sample_starts(state.replay, eval_keys(key)[1], setup.cfg.wm_error_batch)


def evaluate(setup: Setup, state: TrainState, key, starts):
    """{eval_return, eval_return_sampled, and the WM_METRICS if starts is not None} of the
    evaluation at `key`;
    starts: (obs [B, obs_dim], physics [B, n_phys]) from eval_reads(state, key), or None."""
    cfg = setup.cfg
    k_ev, _, k_im = eval_keys(key)
    m = policy_evaluations(setup.env, policy_mean(setup, state.agent.actor),
                           policy_sample(setup, state.agent.actor), k_ev, cfg)
    if starts is not None:
        m.update({k: v for k, v in wm_error_from(setup, state, k_im, starts).items() if k in WM_METRICS})
    return m


def eval_phase(setup: Setup, state: TrainState, key):
    """The evaluation as run_chunk runs it, reads included (a phase for tools and tests)."""
    return evaluate(setup, state, key, eval_reads(setup, state, key))


def train_iteration(setup: Setup, state: TrainState, before):
    """One iteration's training (collect, diffusion updates, agent updates once `before`, the
    env steps done before it, reaches cfg.agent_start_env_steps) -> (state, METRICS)."""
    cfg = setup.cfg
    key, k_col, k_dif, k_ag = jax.random.split(state.key, 4)
    state = collect_phase(setup, state.replace(key=key), k_col)
    state, dm = diffusion_phase(setup, state, k_dif)
    m = nan_metrics()
    m.update(dm, train_return=state.last_return)

    def skip_agent(s):
        return s, {k: jnp.float32(jnp.nan) for k in _AGENT_METRICS}

    if cfg.agent_updates_per_iter > 0:
        state, am = jax.lax.cond(before >= cfg.agent_start_env_steps,
                                 lambda s: agent_phase(setup, s, k_ag), skip_agent, state)
        m.update(am)
    return state, m


_AGENT_METRICS = ("actor_loss", "critic_loss", "logprob_change", "actor_lr", "kl", "imagined_advantage",
                  "action_guidance_scale", "policy_std", "critic_explained_variance", "guide_step_ratio",
                  "action_z_std", "policy_mean_abs")
LEARNERS = {"a2c": a2c, "ppo": ppo, "trpo": trpo}  # imagination learners, same update interface


def init_agent(cfg: Config, actor_params, critic_params, key):
    if cfg.agent == "a2c":
        return a2c.init(cfg, actor_params, critic_params)
    return LEARNERS[cfg.agent].init(cfg, actor_params, critic_params, key)
