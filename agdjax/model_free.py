"""Model-free baselines: PPO or TRPO trained directly on the real environment, as one compiled
program with the same contract as `agdjax.train.make_train` (DESIGN §1 'ppo and trpo', §2).

One iteration i: [evaluate if (i < n_iters and (i * E) % eval_every == 0) or i == n_iters]
-> if i < n_iters, steps_per_iter // rollout_length times: roll out the sampling policy for
rollout_length steps in each of the n_envs environments, then one PPO/TRPO update on those
n_envs * rollout_length transitions with truncation-aware GAE (bootstrapping from V(next_obs)
at time limits, `gae.gae_truncation_aware`). E = n_envs * steps_per_iter as in `make_train`.

No world model, replay buffer, normaliser or random prefill (cfg.prefill_steps is ignored);
the actor and critic take raw observations as everywhere in agdjax. `--agent=a2c` is refused
(config.validate): `a2c.update` is built for imagined windows (EMA target critic, no
truncation, an actor lr adapted to tiny imagination steps), not for long real rollouts.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import struct

from agdjax import envs
from agdjax.agents import a2c, onpolicy, ppo, trpo
from agdjax.agents.onpolicy import Rollout
from agdjax.config import Config, ConfigError
from agdjax.networks import Actor, Critic, policy_dist
from agdjax.train import Program, make_run_chunk, policy_evaluations

LEARNERS = {"ppo": ppo, "trpo": trpo}


@struct.dataclass
class ModelFreeState:
    """All per-seed state of one model-free run (a pytree; vmapped over seeds)."""
    env: envs.EnvCarry  # leaves [n_envs, ...]
    episode_return: jax.Array  # [n_envs], running return of the current training episode
    last_return: jax.Array  # [], mean return of the training episodes finished last iteration
    agent: object  # ppo.PPOState | trpo.TRPOState
    key: jax.Array


def make_model_free_train(cfg: Config) -> Program:
    """The model-free program for cfg.agent in (ppo, trpo). Raises ConfigError otherwise."""
    if cfg.agent not in LEARNERS:
        raise ConfigError(f"--agent={cfg.agent} is not allowed with --model_free; choose one of ppo, trpo")
    learner = LEARNERS[cfg.agent]
    env = envs.make_env(cfg.task, cfg.backend)
    obs_dim, act_dim = envs.observation_size(env), env.action_size
    actor, critic = Actor(act_dim, cfg.hidden, cfg.init_std, cfg.min_std), Critic(cfg.hidden)
    nets = a2c.Nets(actor.apply, critic.apply)
    T = cfg.rollout_length
    updates_per_iter = cfg.steps_per_iter // T
    env_step = functools.partial(envs.step_batch, env, episode_length=cfg.episode_length,
                                 action_bound=cfg.env_action_bound)

    def init(key) -> ModelFreeState:
        k_env, k_a, k_c, k_agent, key = jax.random.split(key, 5)
        env_carry = jax.vmap(functools.partial(envs.reset, env))(jax.random.split(k_env, cfg.n_envs))
        o = jnp.zeros((1, obs_dim))
        agent = learner.init(cfg, actor.init(k_a, o), critic.init(k_c, o), k_agent)
        return ModelFreeState(env_carry, jnp.zeros((cfg.n_envs,)), jnp.float32(jnp.nan), agent, key)

    # ------------------------------------------------------------------ rollouts
    def rollout(state: ModelFreeState, key):
        """T steps of the sampling policy in every env -> (state, Rollout [n_envs, T], finished)."""
        def body(c, k):
            env_carry, ep_ret = c
            obs = env_carry.state.obs
            action = policy_dist(*actor.apply(state.agent.actor, obs)).sample(seed=k)
            env_carry, tr = env_step(env_carry, action)  # raw sample; the simulator gets it as cfg.env_action says
            ended = (tr.terminal + tr.truncated) > 0
            ep_ret = ep_ret + tr.reward
            finished = (jnp.where(ended, ep_ret, 0.0).sum(), ended.sum())
            step = Rollout(obs, action, tr.reward, tr.next_obs, tr.terminal, tr.truncated)
            return (env_carry, jnp.where(ended, 0.0, ep_ret)), (step, finished)

        (env_carry, ep_ret), (steps, finished) = jax.lax.scan(
            body, (state.env, state.episode_return), jax.random.split(key, T))
        ro = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), steps)  # [T, n_envs] -> [n_envs, T]
        state = state.replace(env=env_carry, episode_return=ep_ret)
        return state, ro, jax.tree.map(jnp.sum, finished)

    def collect_phase(state: ModelFreeState, key):
        state, ro, _ = rollout(state, key)
        return state, ro

    def batch_phase(state: ModelFreeState, ro: Rollout):
        """GAE and the behaviour policy's outputs: Rollout -> flat onpolicy.Batch."""
        return onpolicy.from_rollout(cfg, nets, state.agent.actor, state.agent.critic, ro)

    def update_phase(state: ModelFreeState, ro: Rollout):
        """One learner update on a Rollout (batch_phase, then the SGD epochs) -> (state, metrics)."""
        agent, m = learner.update_batch(cfg, nets, state.agent, batch_phase(state, ro))
        return state.replace(agent=agent), m

    def train_step(carry, key):
        """One rollout and one learner update."""
        state, ret_sum, n_done = carry
        state, ro, (r, n) = rollout(state, key)
        state, m = update_phase(state, ro)
        return (state, ret_sum + r, n_done + n), m

    def train_iteration(state: ModelFreeState, before):
        del before  # the model-free schedule has no warm-up
        key, k_next = jax.random.split(state.key)
        state = state.replace(key=k_next)
        init_c = (state, jnp.zeros(()), jnp.zeros((), jnp.int32))
        (state, ret_sum, n_done), m = jax.lax.scan(train_step, init_c, jax.random.split(key, updates_per_iter))
        last = jnp.where(n_done > 0, ret_sum / jnp.maximum(n_done, 1), state.last_return)
        state = state.replace(last_return=last)
        return state, dict(jax.tree.map(jnp.mean, m), train_return=last)

    def eval_phase(state: ModelFreeState, key):
        policy_mean = lambda obs: actor.apply(state.agent.actor, obs)[0]
        policy_sample = lambda k, obs: policy_dist(*actor.apply(state.agent.actor, obs)).sample(seed=k)
        return policy_evaluations(env, policy_mean, policy_sample, key, cfg)

    run_chunk = make_run_chunk(cfg, lambda state, key, reads: eval_phase(state, key), train_iteration)

    # "train" is a whole training iteration (steps_per_iter // rollout_length rollouts and
    # updates); "collect" one rollout, "update" one update on it, "batch" that update's GAE part.
    phases = {"collect": collect_phase, "batch": batch_phase, "update": update_phase,
              "train": train_iteration, "eval": eval_phase}
    return Program(init, run_chunk, cfg, obs_dim, act_dim, phases)
