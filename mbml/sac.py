"""Soft actor-critic for one task, as pure functions (spec §2): the data collector.

Per-task learners are lifted over the task axis by the caller (`nets.lift`).
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from mbml.config import SACConfig
from mbml.nets import MLP, soft_update

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


class Actor(nn.Module):
    hidden: tuple[int, ...]
    act_dim: int

    @nn.compact
    def __call__(self, obs):
        out = MLP(self.hidden, 2 * self.act_dim)(obs)
        mean, log_std = jnp.split(out, 2, axis=-1)
        return mean, jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)


class DoubleQ(nn.Module):
    hidden: tuple[int, ...]

    @nn.compact
    def __call__(self, obs, act):
        q1 = MLP(self.hidden, 1)(obs, act)[..., 0]
        q2 = MLP(self.hidden, 1)(obs, act)[..., 0]
        return q1, q2


class SACState(NamedTuple):
    actor: dict
    critic: dict
    target: dict
    log_alpha: jax.Array
    opt: tuple


def _modules(cfg: SACConfig, act_dim: int):
    return Actor(cfg.policy_hidden, act_dim), DoubleQ(cfg.q_hidden)


def _optimizer(cfg: SACConfig):
    return optax.adam(cfg.lr)


def init(cfg: SACConfig, key, obs_dim: int, act_dim: int) -> SACState:
    actor, critic = _modules(cfg, act_dim)
    k1, k2 = jax.random.split(key)
    obs, act = jnp.zeros((1, obs_dim)), jnp.zeros((1, act_dim))
    pa, pc = actor.init(k1, obs), critic.init(k2, obs, act)
    log_alpha = jnp.zeros(())
    opt = _optimizer(cfg)
    return SACState(pa, pc, jax.tree.map(jnp.copy, pc), log_alpha, (opt.init(pa), opt.init(pc), opt.init(log_alpha)))


def sample_action(cfg: SACConfig, actor_params, obs, key, act_dim: int, deterministic=False):
    """Tanh-squashed Gaussian action and its log-probability."""
    mean, log_std = Actor(cfg.policy_hidden, act_dim).apply(actor_params, obs)
    std = jnp.exp(log_std)
    pre = mean if deterministic else mean + std * jax.random.normal(key, mean.shape)
    action = jnp.tanh(pre)
    logp = jnp.sum(-0.5 * ((pre - mean) / std) ** 2 - log_std - 0.5 * jnp.log(2 * jnp.pi), axis=-1)
    logp -= jnp.sum(2.0 * (jnp.log(2.0) - pre - jax.nn.softplus(-2.0 * pre)), axis=-1)
    return action, logp


def update(cfg: SACConfig, state: SACState, batch: dict, key, act_dim: int):
    """One SAC step on `batch` (obs, actions, rewards, next_obs, terminals) with auto-tuned alpha."""
    _, critic = _modules(cfg, act_dim)
    opt = _optimizer(cfg)
    k1, k2 = jax.random.split(key)
    alpha = jnp.exp(state.log_alpha)

    next_a, next_logp = sample_action(cfg, state.actor, batch["next_obs"], k1, act_dim)
    tq1, tq2 = critic.apply(state.target, batch["next_obs"], next_a)
    y = batch["rewards"] + cfg.gamma * (1.0 - batch["terminals"]) * (jnp.minimum(tq1, tq2) - alpha * next_logp)
    y = jax.lax.stop_gradient(y)

    def critic_loss(pc):
        q1, q2 = critic.apply(pc, batch["obs"], batch["actions"])
        return jnp.mean((q1 - y) ** 2) + jnp.mean((q2 - y) ** 2)

    def actor_loss(pa):
        a, logp = sample_action(cfg, pa, batch["obs"], k2, act_dim)
        q1, q2 = critic.apply(state.critic, batch["obs"], a)
        return jnp.mean(alpha * logp - jnp.minimum(q1, q2)), logp

    def alpha_loss(log_alpha, logp):
        return -jnp.mean(log_alpha * jax.lax.stop_gradient(logp - act_dim))  # target entropy -|A|

    lc, gc = jax.value_and_grad(critic_loss)(state.critic)
    (la, logp), ga = jax.value_and_grad(actor_loss, has_aux=True)(state.actor)
    gl = jax.grad(alpha_loss)(state.log_alpha, logp)
    oa, oc, ol = state.opt
    ua, oa = opt.update(ga, oa)
    uc, oc = opt.update(gc, oc)
    ul, ol = opt.update(gl, ol)
    pc = optax.apply_updates(state.critic, uc)
    new = SACState(optax.apply_updates(state.actor, ua), pc, soft_update(state.target, pc, cfg.tau),
                   optax.apply_updates(state.log_alpha, ul), (oa, oc, ol))
    return new, {"critic_loss": lc, "actor_loss": la, "alpha": alpha}
