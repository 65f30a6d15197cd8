"""Batch-constrained Q-learning for one task, as pure functions (spec §3): the teachers.

Networks: perturbation xi(s, a) = max_action * tanh(.), twin critics, a VAE whose decoder G(s, u) is
the candidate-action generator. Only critic head 1, the decoder and xi are used downstream.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from mbml.config import BCQConfig
from mbml.nets import MLP, mse, soft_update
from mbml.sac import DoubleQ

LATENT_CLIP = 0.5


class VAE(nn.Module):
    hidden: tuple[int, ...]
    act_dim: int

    def setup(self):
        self.enc = MLP(self.hidden, 4 * self.act_dim)  # mean and log-std of a 2*act_dim latent
        self.dec = MLP(self.hidden, self.act_dim)

    def __call__(self, obs, act, key):
        mean, log_std = jnp.split(self.enc(obs, act), 2, axis=-1)
        log_std = jnp.clip(log_std, -4.0, 15.0)
        u = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
        return self.decode(obs, u), mean, log_std

    def decode(self, obs, u):
        return jnp.tanh(self.dec(obs, u))


def sample_latent(key, shape):
    """u ~ N(0, I) clipped to [-0.5, 0.5] (BCQ's decoder noise)."""
    return jnp.clip(jax.random.normal(key, shape), -LATENT_CLIP, LATENT_CLIP)


class Teacher(NamedTuple):
    actor: dict
    critic: dict
    vae: dict
    actor_target: dict
    critic_target: dict
    opt: tuple


def modules(cfg: BCQConfig, act_dim: int):
    return MLP(cfg.actor_hidden, act_dim), DoubleQ(cfg.critic_hidden), VAE(cfg.vae_hidden, act_dim)


def perturb(cfg: BCQConfig, act_dim: int, actor_params, obs, act):
    xi = jnp.tanh(MLP(cfg.actor_hidden, act_dim).apply(actor_params, obs, act))
    return jnp.clip(act + cfg.phi * xi, -1.0, 1.0)


def init(cfg: BCQConfig, key, obs_dim: int, act_dim: int) -> Teacher:
    actor, critic, vae = modules(cfg, act_dim)
    k1, k2, k3, k4 = jax.random.split(key, 4)
    obs, act = jnp.zeros((1, obs_dim)), jnp.zeros((1, act_dim))
    pa, pc, pv = actor.init(k1, obs, act), critic.init(k2, obs, act), vae.init(k3, obs, act, k4)
    opt = optax.adam(cfg.lr)
    copy = lambda t: jax.tree.map(jnp.copy, t)  # noqa: E731
    return Teacher(pa, pc, pv, copy(pa), copy(pc), (opt.init(pa), opt.init(pc), opt.init(pv)))


def decode(cfg: BCQConfig, act_dim: int, vae_params, obs, u):
    return VAE(cfg.vae_hidden, act_dim).apply(vae_params, obs, u, method=VAE.decode)


def target_q(cfg: BCQConfig, act_dim: int, t: Teacher, next_obs, rewards, terminals, key):
    """y = r + (1 - done) * gamma * max over 10 candidates of lam*min(Q1', Q2') + (1-lam)*max(Q1', Q2')."""
    n, c = next_obs.shape[0], cfg.num_candidates
    rep = jnp.repeat(next_obs, c, axis=0)
    cand = decode(cfg, act_dim, t.vae, rep, sample_latent(key, (n * c, 2 * act_dim)))
    cand = perturb(cfg, act_dim, t.actor_target, rep, cand)
    q1, q2 = DoubleQ(cfg.critic_hidden).apply(t.critic_target, rep, cand)
    q = cfg.lam * jnp.minimum(q1, q2) + (1.0 - cfg.lam) * jnp.maximum(q1, q2)
    q = q.reshape(n, c).max(axis=1)
    return rewards + (1.0 - terminals) * cfg.gamma * q


def update(cfg: BCQConfig, t: Teacher, batch: dict, key, act_dim: int):
    actor, critic, vae = modules(cfg, act_dim)
    opt = optax.adam(cfg.lr)
    k_vae, k_tgt, k_act = jax.random.split(key, 3)
    obs, act = batch["obs"], batch["actions"]

    def vae_loss(pv):
        recon, mean, log_std = vae.apply(pv, obs, act, k_vae)
        kl = -0.5 * jnp.mean(1.0 + 2.0 * log_std - mean**2 - jnp.exp(2.0 * log_std))
        return mse(recon, act) + 0.5 * kl

    y = jax.lax.stop_gradient(target_q(cfg, act_dim, t, batch["next_obs"], batch["rewards"],
                                       batch["terminals"], k_tgt))

    def critic_loss(pc):
        q1, q2 = critic.apply(pc, obs, act)
        return mse(q1, y) + mse(q2, y)

    lv, gv = jax.value_and_grad(vae_loss)(t.vae)
    lc, gc = jax.value_and_grad(critic_loss)(t.critic)
    oa, oc, ov = t.opt
    uv, ov = opt.update(gv, ov)
    uc, oc = opt.update(gc, oc)
    pv, pc = optax.apply_updates(t.vae, uv), optax.apply_updates(t.critic, uc)

    sampled = decode(cfg, act_dim, pv, obs, sample_latent(k_act, (obs.shape[0], 2 * act_dim)))
    sampled = jax.lax.stop_gradient(sampled)

    def actor_loss(pa):
        return -jnp.mean(critic.apply(pc, obs, perturb(cfg, act_dim, pa, obs, sampled))[0])

    la, ga = jax.value_and_grad(actor_loss)(t.actor)
    ua, oa = opt.update(ga, oa)
    pa = optax.apply_updates(t.actor, ua)
    new = Teacher(pa, pc, pv, soft_update(t.actor_target, pa, cfg.tau), soft_update(t.critic_target, pc, cfg.tau),
                  (oa, oc, ov))
    return new, {"vae_loss": lv, "critic_loss": lc, "actor_loss": la}


def act(cfg: BCQConfig, act_dim: int, t: Teacher, obs, key):
    """BCQ action selection for one observation: argmax Q1 over 10 decoded, perturbed candidates."""
    c = cfg.num_candidates
    rep = jnp.broadcast_to(obs, (c, obs.shape[-1]))
    cand = decode(cfg, act_dim, t.vae, rep, sample_latent(key, (c, 2 * act_dim)))
    cand = perturb(cfg, act_dim, t.actor, rep, cand)
    q1, _ = DoubleQ(cfg.critic_hidden).apply(t.critic, rep, cand)
    return cand[jnp.argmax(q1)]
