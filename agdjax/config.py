"""Configuration: one frozen dataclass and the presets (paper, cpu, smoke), in one place.

Everything static (shapes, counts, flags) lives in `Config`; nothing inside `jit` reads
globals or flags. Entry points only choose a preset and override a few fields.
Source of the `paper` numbers: ../shared/DESIGN.md §1 (PolyGRAD / AGD-MBRL reference code).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

import numpy as np

TASKS = ("halfcheetah", "hopper", "walker2d", "reacher")
BACKENDS = ("mjx", "spring", "positional", "generalized")
GUIDES = ("none", "sag", "eag", "reward")
AGENTS = ("a2c", "ppo", "trpo")
PRESETS = ("auto", "paper", "cpu", "smoke")
IMAGINATION = ("diffusion", "oracle")
# What the simulator is given (Config.env_action): "clipped", the reference's rule (PolyGRAD /
# AGD-MBRL wrap every environment in `ClippedActionWrapper`): the policy's sample clipped to
# [-ACTION_BOUND, ACTION_BOUND], so the physics and the control cost see the clipped action;
# "raw" (ablation; the rule of sessions 2-12 of this project): the raw sample, which the
# physics clamps while the control cost is charged on the raw action. The replay stores the
# raw sample under both.
ENV_ACTIONS = ("clipped", "raw")
ACTION_BOUND = 1.0  # every task here (halfcheetah, hopper, walker2d, reacher): ctrlrange [-1, 1]
# Fields added with a default that changes what an older run did: the value a saved config
# that predates the field gets (`saved_values`), so that --resume and compare read it as it ran.
_PREDATING_VALUES = {"env_action": "raw"}

# Reference state-guidance scales c (AGD-MBRL): sag 4, eag 3; the reward guide has no
# published value, 1.0 is ours. Per-task values of the AGD-MBRL configs take precedence.
DEFAULT_GUIDE_SCALE = {"none": 0.0, "sag": 4.0, "eag": 3.0, "reward": 1.0}
TASK_GUIDE_SCALE = {("halfcheetah", "sag"): 3.0, ("hopper", "eag"): 4.0, ("walker2d", "sag"): 4.0,
                    ("reacher", "sag"): 4.0}
# Continuous settings that a sweep may vary between the members of one compiled program
# (`--guide_scale=0,1,3,6`). The program reads them from a per-member traced value
# (Config.with_hparams), never as Python constants, so one compile serves every value. To make
# another float field sweepable, add its name here: it must only enter arithmetic (no Python
# `if` on it, no shape), which a traced value enforces by failing loudly.
SWEEPABLE = ("guide_scale", "actor_lr_max", "delta_ref", "diffusion_lr")
# Number of diffusion steps of the reference (PolyGRAD T = 128), at which the step-dependent
# settings (clamp_fraction, delta_ref) were published.
REF_DIFFUSION_STEPS = 128


class ConfigError(ValueError):
    """A configuration value is not allowed; the message names the field and the allowed values."""


@dataclasses.dataclass(frozen=True)
class Config:
    """All static settings of one run (every seed of a run shares them)."""

    # --- what to run
    task: str = "halfcheetah"
    backend: str = "mjx"
    guide: str = "none"
    agent: str = "a2c"
    model_free: bool = False
    guide_scale: Optional[float] = None  # state-guide scale c; None -> TASK_GUIDE_SCALE / DEFAULT_GUIDE_SCALE
    # ablation (ours): the state guide also moves row H-1. The reference zeroes that row's
    # gradient (polygrad/sampling/functions.py, grad[:, :-1]); then, rewards held fixed, the
    # advantage terms telescope and the guide cannot raise the value (docs/RESULTS.md, session 12)
    guide_last_row: bool = False
    env_action: str = "clipped"  # clipped (the reference) | raw (ablation); see ENV_ACTIONS
    preset: str = "paper"
    imagination: str = "diffusion"  # diffusion | oracle (diagnostic: H-step rollouts in the real simulator)
    # swept values: ((name, (v1, v2, ...)), ...) over SWEEPABLE names, in SWEEPABLE order; each
    # combination of values runs every seed (see `members`); () = no sweep
    sweep: tuple = ()

    # --- environment and schedule (env steps count real transitions over all n_envs)
    n_envs: int = 10
    steps_per_iter: int = 100  # per environment; one iteration collects n_envs * steps_per_iter
    episode_length: int = 1000
    total_env_steps: int = 1_500_000
    prefill_steps: int = 5000  # random-action steps before learning, not counted
    diffusion_steps_per_env_step: float = 1.0
    agent_updates_per_env_step: float = 0.25
    agent_start_env_steps: int = 1000
    eval_every: int = 10_000
    eval_episodes: int = 20
    iters_per_chunk: int = 10  # iterations per compiled chunk (one progress / logging step)
    replay_capacity: int = 1_505_000  # transitions kept over all envs (reference keeps all)

    # --- trajectory diffusion world model
    horizon: int = 10
    n_diffusion_steps: int = 128
    sampling_steps: Optional[int] = None  # reverse steps of imagination K <= T (respaced); None -> T
    tau: float = 1.0  # cosine-schedule temperature
    denoiser_hidden: int = 1024
    denoiser_blocks: int = 6
    diffusion_batch: int = 256
    diffusion_lr: float = 3e-4
    ema_decay: float = 0.99
    ema_every: int = 10
    ema_start: int = 2000
    scale_action_input: bool = True  # denoiser sees sqrt(alpha_bar_t) * a (reference) or a
    clamp_fraction: float = 11 / 128  # clamp mu_t - x_t over this last fraction of the reverse steps
    clamp_ref: float = 0.25  # bound of |mu_t - x_t| at REF_DIFFUSION_STEPS steps; see clamp_value
    reward_model_hidden: int = 256
    denoiser_dtype: str = "float32"  # matmul dtype of the denoiser and of the guide's critic/actor/reward model
    # inside the sampler: float32 or bfloat16 (fp32 weights, accumulation, loss; training stays fp32)
    wm_error_batch: int = 64  # trajectories of the world-model error at each evaluation (0: off)

    # --- policy guidance (PolyGRAD) on actions
    delta_ref: float = 0.005  # initial action-guidance scale at REF_DIFFUSION_STEPS; see delta_init
    lr_delta: float = 3e-3
    action_clip_sigmas: float = 3.0

    # --- agent (imagination learner)
    agent_batch: int = 512
    gamma: float = 0.99
    gae_lambda: float = 0.9
    hidden: int = 256
    critic_lr: float = 3e-4
    actor_lr_max: float = 3e-5
    actor_lr_init: float = 3e-5
    target_logprob_change: float = 0.01
    entropy_coef: float = 1e-5
    max_grad_norm: float = 0.1
    weight_decay: float = 1e-4
    target_critic_decay: float = 0.995
    init_std: float = 1.0
    min_std: float = 0.1

    # --- ppo / trpo (imagination learners and model-free baselines; agents/ppo.py, trpo.py)
    ppo_clip: float = 0.2  # epsilon of the clipped surrogate
    ppo_epochs: int = 4  # passes over the batch per update
    ppo_minibatches: int = 4  # minibatches per pass; must divide the transitions per update
    ppo_lr: float = 3e-4  # Adam, actor and critic together
    ppo_value_coef: float = 0.5  # weight of the value loss in the PPO loss
    ppo_max_grad_norm: float = 0.5  # global-norm clip over actor + critic gradients
    entropy_coef_ppo: float = 1e-3
    trpo_max_kl: float = 0.01  # trust region: mean KL(pi_old || pi_new)
    trpo_kl_tolerance: float = 0.1  # the line search accepts KL <= (1 + tolerance) * max_kl
    trpo_cg_iters: int = 10
    trpo_backtrack_iters: int = 10
    trpo_backtrack_coef: float = 0.8
    trpo_damping: float = 0.1  # Fisher-vector products use F + damping * I
    value_lr: float = 1e-3  # TRPO's separate value regression (Adam)
    value_epochs: int = 5  # full-batch Adam steps of the value regression per TRPO update
    unroll_length: Optional[int] = None  # model-free rollout length; None -> steps_per_iter

    # ------------------------------------------------------------------ derived values
    @property
    def env_steps_per_iter(self) -> int:
        return self.n_envs * self.steps_per_iter

    @property
    def n_iters(self) -> int:
        return self.total_env_steps // self.env_steps_per_iter

    @property
    def diffusion_updates_per_iter(self) -> int:
        return int(round(self.env_steps_per_iter * self.diffusion_steps_per_env_step))

    @property
    def agent_updates_per_iter(self) -> int:
        return int(round(self.env_steps_per_iter * self.agent_updates_per_env_step))

    @property
    def rollout_length(self) -> int:
        """Model-free: steps per environment of one rollout (one PPO/TRPO update)."""
        return self.steps_per_iter if self.unroll_length is None else self.unroll_length

    @property
    def transitions_per_update(self) -> int:
        """Transitions in one PPO/TRPO batch: n_envs * rollout_length (model-free) or
        agent_batch * (horizon - 1) (imagination)."""
        if self.model_free:
            return self.n_envs * self.rollout_length
        return self.agent_batch * (self.horizon - 1)

    @property
    def c(self) -> float:
        """The state-guide scale c actually used: guide_scale, else the AGD-MBRL value for
        (task, guide), else the per-guide default."""
        if self.guide_scale is not None:
            return self.guide_scale
        return TASK_GUIDE_SCALE.get((self.task, self.guide), DEFAULT_GUIDE_SCALE[self.guide])

    @property
    def n_sampling_steps(self) -> int:
        """K, the reverse steps of imagination: sampling_steps, else n_diffusion_steps (T).
        K < T samples on the respaced chain (diffusion.respace); the per-step settings below
        scale with K as they do with T."""
        return self.n_diffusion_steps if self.sampling_steps is None else self.sampling_steps

    @property
    def clamp_last_steps(self) -> int:
        """Largest step index t with (t+1)/K <= clamp_fraction (K = n_sampling_steps): the
        sampler clamps mu_t - x_t for t <= this. K=128 -> 10 (the reference), 16 -> 0,
        4 -> -1 (no clamp)."""
        return math.floor(self.clamp_fraction * self.n_sampling_steps + 1e-9) - 1

    @property
    def env_action_bound(self) -> Optional[float]:
        """The bound the simulator clips actions to: ACTION_BOUND under env_action 'clipped',
        None (no clip) under 'raw'."""
        return ACTION_BOUND if self.env_action == "clipped" else None

    @property
    def clamp_value(self) -> float:
        """Bound of |mu_t - x_t| in the clamped steps: clamp_ref per step at
        REF_DIFFUSION_STEPS steps, scaled by REF_DIFFUSION_STEPS / K, since each of K steps
        moves about 1/K of the way (K=128 -> 0.25, the reference; K=16 -> 2)."""
        return self.clamp_ref * REF_DIFFUSION_STEPS / self.n_sampling_steps

    @property
    def delta_init(self) -> float:
        """Initial action-guidance scale: a per-step pull, delta_ref at REF_DIFFUSION_STEPS
        steps, scaled by REF_DIFFUSION_STEPS / K (K=16 -> 0.04)."""
        return self.delta_ref * REF_DIFFUSION_STEPS / self.n_sampling_steps

    @property
    def capacity_per_env(self) -> int:
        return max(self.replay_capacity // self.n_envs, self.horizon + 1)

    def to_dict(self) -> dict:
        """The fields as JSON-ready values (the sweep as {name: [values]})."""
        d = dataclasses.asdict(self)
        d["sweep"] = {k: list(v) for k, v in self.sweep}
        return d

    def with_hparams(self, hparams: dict) -> "Config":
        """This config with the SWEEPABLE fields in `hparams` replaced (by traced values inside
        the compiled program; see `member_hparams`). Not validated: call it only there."""
        return dataclasses.replace(self, **hparams)


def normalize_sweep(sweep) -> tuple:
    """A sweep given as {name: [values]} or ((name, values), ...) -> ((name, (float, ...)),
    ...) in SWEEPABLE order, names with a single value dropped (they are plain settings).

    Raises:
      ConfigError: an unknown name, an empty or repeated value list, or a value that is not a number.
    """
    items = dict(sweep.items() if isinstance(sweep, dict) else sweep)
    for name, values in items.items():
        if name not in SWEEPABLE:
            raise ConfigError(f"{name!r} cannot be swept; sweepable settings: {', '.join(SWEEPABLE)}")
        try:
            values = [float(v) for v in values]
        except (TypeError, ValueError):
            raise ConfigError(f"--{name}={values!r}: give numbers separated by commas, e.g. 0,1,3")
        if not values:
            raise ConfigError(f"--{name}: give at least one value")
        if len({float(np.float32(v)) for v in values}) != len(values):  # the program gets float32
            raise ConfigError(f"--{name}={','.join(repr(v) for v in values)} repeats a value (in float32); "
                              f"give each once")
        items[name] = tuple(values)
    return tuple((k, items[k]) for k in SWEEPABLE if k in items and len(items[k]) > 1)


def members(cfg: Config, seeds) -> list:
    """The members of a run: every combination of the swept values (first sweep name
    outermost), and within each every seed: [{"seed": s, name: value, ...}]. Without a sweep:
    one member {"seed": s} per seed."""
    combos = [{}]
    for name, values in cfg.sweep:
        combos = [dict(c, **{name: v}) for c in combos for v in values]
    return [{"seed": int(s), **c} for c in combos for s in seeds]


def member_hparams(cfg: Config, members_: list) -> dict:
    """{name: [value per member]} of every SWEEPABLE field: the member's swept value, else the
    run's (guide_scale as resolved, `Config.c`). The program gets these as traced inputs."""
    base = {k: float(cfg.c if k == "guide_scale" else getattr(cfg, k)) for k in SWEEPABLE}
    return {k: [float(m.get(k, base[k])) for m in members_] for k in SWEEPABLE}


def program_config(cfg: Config) -> Config:
    """The config with the SWEEPABLE fields and the sweep reset to their defaults: what the
    compiled program depends on (those values are its inputs), so runs that differ only there
    share one compile."""
    default = Config()
    return dataclasses.replace(cfg, sweep=(), **{k: getattr(default, k) for k in SWEEPABLE})


def _check_choice(name, value, allowed):
    if value not in allowed:
        raise ConfigError(f"--{name}={value!r} is not allowed; choose one of {', '.join(allowed)}")


def _check_positive(name, value):
    if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
        raise ConfigError(f"--{name}={value!r} must be a positive number")


def validate(cfg: Config) -> Config:
    """Checks every field a user can set; raises ConfigError with a one-line message."""
    _check_choice("task", cfg.task, TASKS)
    _check_choice("backend", cfg.backend, BACKENDS)
    _check_choice("guide", cfg.guide, GUIDES)
    _check_choice("agent", cfg.agent, AGENTS)
    _check_choice("preset", cfg.preset, PRESETS[1:])
    _check_choice("denoiser_dtype", cfg.denoiser_dtype, ("float32", "bfloat16"))
    _check_choice("imagination", cfg.imagination, IMAGINATION)
    _check_choice("env_action", cfg.env_action, ENV_ACTIONS)
    if cfg.model_free and cfg.imagination != "diffusion":
        raise ConfigError(f"--imagination={cfg.imagination} is not allowed with --model_free (there is no "
                          f"imagination); use --imagination=diffusion")
    if cfg.wm_error_batch < 0:
        raise ConfigError(f"--wm_error_batch={cfg.wm_error_batch} must be >= 0")
    for name in ("n_envs", "steps_per_iter", "episode_length", "total_env_steps", "eval_every",
                 "eval_episodes", "iters_per_chunk", "horizon", "n_diffusion_steps",
                 "denoiser_hidden", "denoiser_blocks", "diffusion_batch", "agent_batch", "tau"):
        _check_positive(name, getattr(cfg, name))
    for name in ("delta_ref", "actor_lr_max", "diffusion_lr"):
        _check_positive(name, getattr(cfg, name))
    _check_positive("clamp_ref", cfg.clamp_ref)
    if not (isinstance(cfg.clamp_fraction, (int, float)) and 0.0 <= cfg.clamp_fraction <= 1.0):
        raise ConfigError(f"clamp_fraction={cfg.clamp_fraction!r} must be a number in [0, 1]")
    if cfg.sampling_steps is not None and not (isinstance(cfg.sampling_steps, int)
                                               and 1 <= cfg.sampling_steps <= cfg.n_diffusion_steps):
        raise ConfigError(f"--sampling_steps={cfg.sampling_steps!r} must be an integer in 1..{cfg.n_diffusion_steps} "
                          f"(the number of diffusion steps the world model is trained with)")
    if cfg.prefill_steps < 0:
        raise ConfigError(f"--prefill_steps={cfg.prefill_steps} must be >= 0")
    if cfg.guide_scale is not None:
        _check_guide_scale(cfg.guide_scale)
    _validate_sweep(cfg)
    if cfg.model_free and cfg.guide != "none":
        raise ConfigError(f"--guide={cfg.guide} is not allowed with --model_free; use --guide=none")
    if not isinstance(cfg.guide_last_row, bool) or (cfg.guide_last_row and cfg.guide == "none"):
        raise ConfigError(f"--guide_last_row={cfg.guide_last_row!r}: allowed only as true or false, and true "
                          f"only with a state guide (--guide=sag, eag or reward), not --guide={cfg.guide}")
    if cfg.horizon < 2:
        raise ConfigError(f"--horizon={cfg.horizon} must be >= 2")
    if cfg.total_env_steps % cfg.env_steps_per_iter:
        raise ConfigError(
            f"--total_env_steps={cfg.total_env_steps} must be a multiple of n_envs*steps_per_iter "
            f"= {cfg.env_steps_per_iter}")
    if cfg.eval_every % cfg.env_steps_per_iter:
        raise ConfigError(
            f"eval_every={cfg.eval_every} must be a multiple of n_envs*steps_per_iter "
            f"= {cfg.env_steps_per_iter}")
    for name, ratio in (("diffusion_steps_per_env_step", cfg.diffusion_steps_per_env_step),
                        ("agent_updates_per_env_step", cfg.agent_updates_per_env_step)):
        n = cfg.env_steps_per_iter * ratio
        if not math.isfinite(ratio) or ratio < 0 or abs(n - round(n)) > 1e-9:
            raise ConfigError(f"{name}={ratio} times {cfg.env_steps_per_iter} env steps per "
                              f"iteration must be a whole number >= 0")
    _validate_ppo_trpo(cfg)
    if cfg.prefill_steps % cfg.n_envs:
        raise ConfigError(f"prefill_steps={cfg.prefill_steps} must be a multiple of n_envs={cfg.n_envs}")
    return cfg


def _check_guide_scale(value):
    if not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"--guide_scale={value!r} must be a finite number >= 0")


def _validate_sweep(cfg: Config):
    if cfg.sweep != normalize_sweep(cfg.sweep):
        raise ConfigError(f"sweep={cfg.sweep!r} is not in normal form; build it with normalize_sweep")
    for name, values in cfg.sweep:
        flag = f"--{name}={','.join(f'{v:g}' for v in values)}"
        if cfg.model_free:
            raise ConfigError(f"{flag}: a sweep needs the world model; it is not allowed with --model_free")
        if name == "actor_lr_max" and cfg.agent != "a2c":
            raise ConfigError(f"{flag}: only --agent=a2c has an adaptive actor learning rate to cap")
        if name == "guide_scale":
            if cfg.guide == "none":
                raise ConfigError(f"{flag}: --guide=none has no guide scale; choose a guide to sweep")
            if cfg.imagination == "oracle":
                raise ConfigError(f"{flag}: --imagination=oracle trains on the simulator, so the guide "
                                  f"scale would change nothing the learner sees")
            for v in values:
                _check_guide_scale(v)
        elif not all(math.isfinite(v) and v > 0 for v in values):
            raise ConfigError(f"{flag}: every value must be a positive number")


def _validate_ppo_trpo(cfg: Config):
    for name in ("ppo_clip", "ppo_lr", "ppo_max_grad_norm", "trpo_max_kl", "value_lr"):
        _check_positive(name, getattr(cfg, name))
    for name in ("ppo_epochs", "ppo_minibatches", "trpo_cg_iters", "trpo_backtrack_iters", "value_epochs"):
        v = getattr(cfg, name)
        if not (isinstance(v, int) and v >= 1):
            raise ConfigError(f"{name}={v!r} must be an integer >= 1")
    for name in ("ppo_value_coef", "entropy_coef_ppo", "trpo_kl_tolerance", "trpo_damping"):
        v = getattr(cfg, name)
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise ConfigError(f"{name}={v!r} must be a finite number >= 0")
    if not 0.0 < cfg.trpo_backtrack_coef < 1.0:
        raise ConfigError(f"trpo_backtrack_coef={cfg.trpo_backtrack_coef!r} must be in (0, 1)")
    if cfg.unroll_length is not None:
        if not (isinstance(cfg.unroll_length, int) and cfg.unroll_length >= 1):
            raise ConfigError(f"unroll_length={cfg.unroll_length!r} must be an integer >= 1")
        if cfg.steps_per_iter % cfg.unroll_length:
            raise ConfigError(f"unroll_length={cfg.unroll_length} must divide steps_per_iter={cfg.steps_per_iter}")
    if cfg.model_free and cfg.agent == "a2c":
        raise ConfigError("--agent=a2c is not allowed with --model_free; choose one of ppo, trpo")
    if cfg.agent == "ppo" and cfg.transitions_per_update % cfg.ppo_minibatches:
        what = "n_envs*rollout_length" if cfg.model_free else "agent_batch*(horizon-1)"
        raise ConfigError(f"ppo_minibatches={cfg.ppo_minibatches} must divide the transitions per update "
                          f"{what} = {cfg.transitions_per_update}")


# ---------------------------------------------------------------------------- presets
def reference_windows_per_env_step(diffusion_batch: int) -> float:
    """Denoiser updates per env step that train on as many windows per env step as the
    reference (1.0 update of 256 windows: the Config defaults, which the `paper` preset keeps)
    with batches of `diffusion_batch`."""
    paper = Config()
    return paper.diffusion_steps_per_env_step * paper.diffusion_batch / diffusion_batch


# `paper`: the reference numbers of DESIGN §1. `cpu`: a smaller denoiser, networks, batches,
# number of diffusion steps and agent updates (0.1 per env step, actor lr cap 1e-4 to make up
# for fewer updates) for a 2-core CPU. The denoiser gets the reference's windows per env step:
# 2.0 updates of 128 windows = 1.0 x 256 (the imagined policy gradient was nearly orthogonal
# to the true one at 10k env steps with 0.5 x 128, cos 0.03, and 0.49 with 2.0 x 128;
# docs/RESULTS.md, session 8). Its denoiser
# (512 x 3) sees the actions unscaled (`scale_action_input=False`). On the same replay, that
# predicts states, rewards and the action's cost better than the reference's
# sqrt(alpha_bar_t) * a, and better than a 256 x 2 denoiser: the correlation of imagined with
# simulated advantages rises from 0.27 to 0.46 (docs/RESULTS.md, "Imagination quality").
# `smoke`: seconds, for tests.
_PRESETS = {
    "paper": dict(),
    "cpu": dict(
        n_envs=10, steps_per_iter=100, total_env_steps=100_000, replay_capacity=105_000,
        n_diffusion_steps=16, denoiser_hidden=512, denoiser_blocks=3, diffusion_batch=128,
        agent_batch=64, hidden=128, eval_episodes=10, iters_per_chunk=5,
        diffusion_steps_per_env_step=reference_windows_per_env_step(128),
        agent_updates_per_env_step=0.1, actor_lr_max=1e-4,
        scale_action_input=False,
    ),
    "smoke": dict(
        n_envs=2, steps_per_iter=8, total_env_steps=64, prefill_steps=32, replay_capacity=256,
        episode_length=20, agent_start_env_steps=16, eval_every=32, eval_episodes=2,
        iters_per_chunk=2, horizon=4, n_diffusion_steps=4, denoiser_hidden=32,
        denoiser_blocks=1, diffusion_batch=8, agent_batch=8, hidden=32, ema_start=4,
        ema_every=2, reward_model_hidden=16, diffusion_steps_per_env_step=0.25,
    ),
}
# Task-specific reference values (PolyGRAD: hopper tau 0.1, budget 1.0M).
_TASK_OVERRIDES = {
    "paper": {"hopper": dict(tau=0.1, total_env_steps=1_000_000, replay_capacity=1_005_000)},
    "cpu": {"hopper": dict(tau=0.1)},
    "smoke": {"hopper": dict(tau=0.1)},
}


def saved_values(saved_config: dict) -> dict:
    """Every Config field's value in a saved run's config dict (config.json): a field the dict
    predates takes its default (fields are added with a default that keeps the old behaviour),
    or, for the few whose default does not (`_PREDATING_VALUES`), the value older runs had;
    keys that are no longer fields are dropped."""
    return {k: saved_config.get(k, _PREDATING_VALUES.get(k, v)) for k, v in Config().to_dict().items()}


def completed_config(saved_config: dict) -> dict:
    """A saved config dict with every current field filled in as `saved_values` does (a field
    it predates takes its default, or the value older runs had, e.g. env_action 'raw'); keys
    that are no longer fields are kept as saved."""
    return {**saved_config, **saved_values(saved_config)}


def make_config(task: str = "halfcheetah", preset: str = "paper", **overrides) -> Config:
    """The preset's config for `task`, with `overrides` applied, validated.

    Raises:
      ConfigError: an unknown preset/task or a field value that is not allowed.
    """
    _check_choice("preset", preset, PRESETS[1:])
    _check_choice("task", task, TASKS)
    fields = {f.name for f in dataclasses.fields(Config)}
    for k in overrides:
        if k not in fields:
            raise ConfigError(f"unknown config field {k!r}")
    values = dict(_PRESETS[preset])
    values.update(_TASK_OVERRIDES.get(preset, {}).get(task, {}))
    values.update({k: v for k, v in overrides.items() if v is not None or k == "guide_scale"})
    sweep = values.get("sweep", ())
    for name, vs in (sweep.items() if isinstance(sweep, dict) else sweep):
        if name in SWEEPABLE and len(vs) == 1:  # one value: a plain setting
            values[name] = float(vs[0])
    values["sweep"] = normalize_sweep(sweep)
    return validate(Config(task=task, preset=preset, **values))


def resolve_preset(preset: str, platform: str) -> str:
    """`auto` -> `paper` on an accelerator (gpu/tpu), `cpu` on a CPU."""
    if preset != "auto":
        return preset
    return "cpu" if platform == "cpu" else "paper"
