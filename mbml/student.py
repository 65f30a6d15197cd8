"""The task-conditioned student and its losses, as pure functions (paper §3, spec §5).

Context encoder q_phi: a per-transition MLP giving a diagonal Gaussian over z; the posterior of a
set is the product of its members' Gaussians (PEARL). Q, G and xi are the BCQ networks with z as an
extra input, distilled from the per-task teachers.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mbml.config import DistillConfig
from mbml.nets import MLP

MIN_VAR = 1e-7


class Student(NamedTuple):
    encoder: dict
    q: dict
    g: dict
    xi: dict


def context(obs, act, rew, next_obs):
    """A transition as the encoder sees it: (s, a, s', r), the authors' order (spec §5.1)."""
    return jnp.concatenate([obs, act, next_obs, rew[..., None]], axis=-1)


def nets(cfg: DistillConfig, act_dim: int):
    return (MLP(cfg.encoder_hidden, 2 * cfg.latent_dim), MLP(cfg.q_hidden, 1),
            MLP(cfg.g_hidden, act_dim), MLP(cfg.xi_hidden, act_dim))


def init(cfg: DistillConfig, key, obs_dim: int, act_dim: int) -> Student:
    enc, q, g, xi = nets(cfg, act_dim)
    ks = jax.random.split(key, 4)
    o, a, z = jnp.zeros((1, obs_dim)), jnp.zeros((1, act_dim)), jnp.zeros((1, cfg.latent_dim))
    c = context(o, a, jnp.zeros(1), o)
    return Student(enc.init(ks[0], c), q.init(ks[1], o, a, z), g.init(ks[2], o, jnp.zeros((1, 2 * act_dim)), z),
                   xi.init(ks[3], o, a, z))


def encode(cfg: DistillConfig, params, ctx):
    """Per-transition Gaussians: means and variances [..., latent] (variance = softplus, >= 1e-7)."""
    out = MLP(cfg.encoder_hidden, 2 * cfg.latent_dim).apply(params, ctx)
    mu, pre = jnp.split(out, 2, axis=-1)
    return mu, jnp.maximum(jax.nn.softplus(pre), MIN_VAR)


def posterior(mu, var, mask=None):
    """Product of the Gaussians over the transition axis (-2), counting only where mask is True.

    sigma^2 = 1 / sum_t 1/sigma_t^2, mu = sigma^2 * sum_t mu_t / sigma_t^2. An empty set gives the
    (improper) flat posterior mu = 0, var = 1/MIN_VAR; callers mask such sets out.
    """
    w = 1.0 / var if mask is None else mask[..., None] / var
    prec = jnp.maximum(jnp.sum(w, axis=-2), MIN_VAR)
    var_p = 1.0 / prec
    return var_p * jnp.sum(w * mu, axis=-2), var_p


def gaussian_kl(mu1, var1, mu2, var2):
    """KL(N(mu1, var1) || N(mu2, var2)) for diagonal Gaussians, summed over the last axis."""
    return 0.5 * jnp.sum(jnp.log(var2 / var1) + (var1 + (mu1 - mu2) ** 2) / var2 - 1.0, axis=-1)


def prior_kl(mu, var):
    """KL(q || N(0, I))."""
    return gaussian_kl(mu, var, jnp.zeros_like(mu), jnp.ones_like(var))


def triplet_loss(anchor, positive, negative, valid, margin: float):
    """Eq. 8/9 with d = KL: mean over valid pairs of relu(KL(a || p) - KL(a || n) + m).

    Each of anchor/positive/negative is (mu, var) with a leading pair shape; `valid` marks pairs
    with at least one accepted relabelled transition. Pairs with none carry no information and are
    left out of the mean (the authors' code keeps them as a constant `margin`; spec §5.2).
    """
    d_pos = gaussian_kl(*anchor, *positive)
    d_neg = gaussian_kl(*anchor, *negative)
    per_pair = jax.nn.relu(d_pos - d_neg + margin)
    n = jnp.sum(valid)
    return jnp.sum(jnp.where(valid, per_pair, 0.0)) / jnp.maximum(n, 1), (d_pos, d_neg)


def hard_negative_loss(mu, var, margin: float):
    """Eq. 11, batch-hard mining without relabelling (`no_relabel`).

    mu, var: [K, S, latent], S context sets per task. For every anchor set p of task i:
    d_within = max KL(p || p') over sets p' of task i, d_across = min KL(p || q) over sets of the
    other tasks; loss = mean over anchors of relu(d_within - d_across + m) (the authors' code sums
    over the K*S anchors; we average, so the scale matches the full model's loss).
    """
    k, s, _ = mu.shape
    m, v = mu.reshape(k * s, -1), var.reshape(k * s, -1)
    d = gaussian_kl(m[:, None], v[:, None], m[None], v[None])  # [KS, KS]
    task = jnp.repeat(jnp.arange(k), s)
    same = task[:, None] == task[None]
    d_within = jnp.max(jnp.where(same, d, -jnp.inf), axis=1)
    d_across = jnp.min(jnp.where(same, jnp.inf, d), axis=1)
    return jnp.mean(jax.nn.relu(d_within - d_across + margin))


def q_value(cfg: DistillConfig, act_dim: int, s: Student, obs, act, z):
    return MLP(cfg.q_hidden, 1).apply(s.q, obs, act, z)[..., 0]


def generate(cfg: DistillConfig, act_dim: int, s: Student, obs, u, z):
    return jnp.tanh(MLP(cfg.g_hidden, act_dim).apply(s.g, obs, u, z))


def perturbation(cfg: DistillConfig, act_dim: int, s: Student, obs, act, z):
    """xi(s, a, z) in [-1, 1], before the phi scaling (the teachers' xi is distilled the same way)."""
    return jnp.tanh(MLP(cfg.xi_hidden, act_dim).apply(s.xi, obs, act, z))


def act(cfg: DistillConfig, act_dim: int, phi: float, num_candidates: int, s: Student, obs, z, key):
    """Action selection (Fig. 3): argmax_m Q(s, a_m + phi * xi(s, a_m, z), z), a_m = G(s, u_m, z)."""
    from mbml.bcq import sample_latent

    c = num_candidates
    rep = jnp.broadcast_to(obs, (c, obs.shape[-1]))
    zz = jnp.broadcast_to(z, (c, z.shape[-1]))
    cand = generate(cfg, act_dim, s, rep, sample_latent(key, (c, 2 * act_dim)), zz)
    cand = jnp.clip(cand + phi * perturbation(cfg, act_dim, s, rep, cand, zz), -1.0, 1.0)
    return cand[jnp.argmax(q_value(cfg, act_dim, s, rep, cand, zz))]
