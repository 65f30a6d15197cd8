"""Soft actor-critic for one task, as pure functions (spec §2): the data collector.

Per-task learners are lifted over the task axis by the caller (`nets.lift`). `SACConfig.critic`
chooses the Q networks: the authors' ReLU MLPs with Polyak-averaged targets (`mlp`), the same with
LayerNorm after every hidden layer (`layernorm`: DroQ, BRO, SimBa), or CrossQ's (`crossq`, Bhatt et
al. 2024): batch normalisation, no target networks, and the current and next state-actions in one
forward pass so that both are normalised with the same batch statistics. CrossQ's batch
*re*normalisation equals batch normalisation during its first 100K steps (its warm-up), which
covers every `cpu` budget here, so flax's BatchNorm stands in for it.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mbml.config import SACConfig
from mbml.nets import MLP, soft_update
from mbml.transitions import gather, gather_n

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
BN_MOMENTUM = 0.99  # CrossQ's running-statistics decay


class Actor(nn.Module):
    hidden: tuple[int, ...]
    act_dim: int

    @nn.compact
    def __call__(self, obs):
        out = MLP(self.hidden, 2 * self.act_dim)(obs)
        mean, log_std = jnp.split(out, 2, axis=-1)
        return mean, jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)


class NormedQ(nn.Module):
    """One Q network with a normalisation after every hidden Dense layer (and, for batch norm as in
    CrossQ, on its input too)."""

    hidden: tuple[int, ...]
    norm: str  # layer | batch

    @nn.compact
    def __call__(self, obs, act, train: bool = False):
        def normalise(x):
            if self.norm == "layer":
                return nn.LayerNorm()(x)
            return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM)(x)

        x = jnp.concatenate([obs, act], axis=-1)
        if self.norm == "batch":
            x = normalise(x)
        for h in self.hidden:
            x = nn.relu(normalise(nn.Dense(h)(x)))
        return nn.Dense(1)(x)[..., 0]


class DoubleQ(nn.Module):
    hidden: tuple[int, ...]
    critic: str = "mlp"

    @nn.compact
    def __call__(self, obs, act, train: bool = False):
        if self.critic == "mlp":
            return MLP(self.hidden, 1)(obs, act)[..., 0], MLP(self.hidden, 1)(obs, act)[..., 0]
        norm = "layer" if self.critic == "layernorm" else "batch"
        return NormedQ(self.hidden, norm)(obs, act, train), NormedQ(self.hidden, norm)(obs, act, train)


class SACState(NamedTuple):
    actor: dict
    critic: dict  # flax variables: {"params"} (+ {"batch_stats"} for crossq)
    target: dict  # the target critic's variables ({} for crossq, which has none)
    log_alpha: jax.Array
    opt: tuple


def _modules(cfg: SACConfig, act_dim: int):
    return Actor(cfg.policy_hidden, act_dim), DoubleQ(cfg.q_hidden, cfg.critic)


def _optimizer(cfg: SACConfig):
    return optax.adam(cfg.lr, b1=cfg.adam_b1)


def init(cfg: SACConfig, key, obs_dim: int, act_dim: int) -> SACState:
    actor, critic = _modules(cfg, act_dim)
    k1, k2 = jax.random.split(key)
    obs, act = jnp.zeros((1, obs_dim)), jnp.zeros((1, act_dim))
    pa, pc = actor.init(k1, obs), dict(critic.init(k2, obs, act))
    target = {} if cfg.critic == "crossq" else jax.tree.map(jnp.copy, pc)
    log_alpha = jnp.full((), np.log(cfg.init_temperature), jnp.float32)
    opt = _optimizer(cfg)
    return SACState(pa, pc, target, log_alpha, (opt.init(pa), opt.init({"params": pc["params"]}), opt.init(log_alpha)))


def sample_action(cfg: SACConfig, actor_params, obs, key, act_dim: int, deterministic=False):
    """Tanh-squashed Gaussian action and its log-probability."""
    mean, log_std = Actor(cfg.policy_hidden, act_dim).apply(actor_params, obs)
    std = jnp.exp(log_std)
    pre = mean if deterministic else mean + std * jax.random.normal(key, mean.shape)
    action = jnp.tanh(pre)
    logp = jnp.sum(-0.5 * ((pre - mean) / std) ** 2 - log_std - 0.5 * jnp.log(2 * jnp.pi), axis=-1)
    logp -= jnp.sum(2.0 * (jnp.log(2.0) - pre - jax.nn.softplus(-2.0 * pre)), axis=-1)
    return action, logp


def collect_action(cfg: SACConfig, actor_params, obs, key, act_dim: int, t):
    """The collector's action at env step t: the policy's sample, or uniform in [-1, 1] during a
    `uniform` warm-up."""
    action, _ = sample_action(cfg, actor_params, obs, key, act_dim)
    if cfg.warmup != "uniform":
        return action
    uniform = jax.random.uniform(jax.random.fold_in(key, 1), action.shape, minval=-1.0, maxval=1.0)
    return jnp.where(t < cfg.warmup_steps, uniform, action)


def replay_batch(cfg: SACConfig, buf: dict, key, t) -> dict:
    """A mini-batch drawn uniformly from steps 0..t of one task's replay buffer (`collect.empty_buffer`
    layout); n-step transitions (`transitions.gather_n`) when `cfg.n_step` > 1."""
    idx = jax.random.randint(key, (cfg.batch_size,), 0, t + 1)
    return gather(buf, idx) if cfg.n_step == 1 else gather_n(buf, idx, cfg.n_step, cfg.gamma, t)


def update(cfg: SACConfig, state: SACState, batch: dict, key, act_dim: int):
    """One SAC step on `batch` (obs, actions, rewards, next_obs, terminals; `discount` per transition
    for n-step batches, else gamma), alpha tuned towards entropy -|A| unless fixed.
    Returns the new state and the step's metrics (scalars)."""
    _, critic = _modules(cfg, act_dim)
    opt = _optimizer(cfg)
    k1, k2 = jax.random.split(key)
    alpha = jnp.exp(state.log_alpha)
    discount = batch.get("discount", cfg.gamma)
    obs, act = batch["obs"], batch["actions"]

    next_a, next_logp = sample_action(cfg, state.actor, batch["next_obs"], k1, act_dim)

    def target(next_q):
        return jax.lax.stop_gradient(
            batch["rewards"] + discount * (1.0 - batch["terminals"]) * (next_q - alpha * next_logp))

    if cfg.critic == "crossq":
        def critic_loss(trainable):
            n = obs.shape[0]
            (q1, q2), new = critic.apply({**trainable, "batch_stats": state.critic["batch_stats"]},
                                         jnp.concatenate([obs, batch["next_obs"]]), jnp.concatenate([act, next_a]),
                                         train=True, mutable=["batch_stats"])
            y = target(jnp.minimum(q1[n:], q2[n:]))
            return jnp.mean((q1[:n] - y) ** 2) + jnp.mean((q2[:n] - y) ** 2), (q1[:n], new["batch_stats"])
    else:
        y = target(jnp.minimum(*critic.apply(state.target, batch["next_obs"], next_a)))

        def critic_loss(trainable):
            q1, q2 = critic.apply(trainable, obs, act)
            return jnp.mean((q1 - y) ** 2) + jnp.mean((q2 - y) ** 2), (q1, None)

    def actor_loss(pa):
        a, logp = sample_action(cfg, pa, obs, k2, act_dim)
        q1, q2 = critic.apply(state.critic, obs, a)
        return jnp.mean(alpha * logp - jnp.minimum(q1, q2)), logp

    def alpha_loss(log_alpha, logp):
        return -jnp.mean(log_alpha * jax.lax.stop_gradient(logp - act_dim))  # target entropy -|A|

    (lc, (q, stats)), gc = jax.value_and_grad(critic_loss, has_aux=True)({"params": state.critic["params"]})
    (la, logp), ga = jax.value_and_grad(actor_loss, has_aux=True)(state.actor)
    oa, oc, ol = state.opt
    ua, oa = opt.update(ga, oa)
    uc, oc = opt.update(gc, oc)
    pc = optax.apply_updates({"params": state.critic["params"]}, uc)
    if stats is not None:
        pc = {**pc, "batch_stats": stats}
    log_alpha = state.log_alpha
    if cfg.learn_temperature:
        ul, ol = opt.update(jax.grad(alpha_loss)(state.log_alpha, logp), ol)
        log_alpha = optax.apply_updates(state.log_alpha, ul)
    tgt = {} if cfg.critic == "crossq" else soft_update(state.target, pc, cfg.tau)
    new = SACState(optax.apply_updates(state.actor, ua), pc, tgt, log_alpha, (oa, oc, ol))
    return new, {"critic_loss": lc, "actor_loss": la, "alpha": alpha, "entropy": -jnp.mean(logp), "q": jnp.mean(q)}


METRICS = ("critic_loss", "actor_loss", "alpha", "entropy", "q")
"""What `update` reports each step (logged by the collectors as means over a logging interval)."""
