"""Stage `distill`: one student from K teachers, with the triplet loss (Alg. 1, Eq. 3-11, spec §5).

The five methods of the paper are switches of this one code path:

| method       | encoder context (per task)     | relabelling        | triplet loss            |
|--------------|--------------------------------|--------------------|-------------------------|
| `full`       | 64 own + 64 relabelled         | reward ensembles   | Eq. 8/9 (relabelled)    |
| `no_triplet` | 64 own + 64 relabelled         | reward ensembles   | none                    |
| `no_relabel` | 128 own                        | none               | Eq. 11 (hard negatives) |
| `neither`    | 128 own                        | none               | none                    |
| `gt_relabel` | 64 own + 64 relabelled         | true reward        | Eq. 8/9 (relabelled)    |
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mbml import bcq, student as S
from mbml.agents import StudentAgent
from mbml.config import METHODS, BCQConfig, DistillConfig, Method, RunConfig  # noqa: F401 (METHODS re-exported)
from mbml.sac import DoubleQ
from mbml.nets import MLP
from mbml.train_loop import run_chunks
from mbml.transitions import take


def _ctx(data, idx):
    ctx = take(data, idx)
    return S.context(ctx["obs"], ctx["actions"], ctx["rewards"], ctx["next_obs"])


def teacher_targets(bcq_cfg: BCQConfig, act_dim: int, teachers, obs, act, u):
    """Per task i on its own (s, a): Q1_i(s, a), a_hat = G_i(s, u) and xi_i(s, a_hat) (spec §5.2 step 2)."""
    def one(t, o, a, uu):
        q1 = DoubleQ(bcq_cfg.critic_hidden).apply(t.critic, o, a)[0]
        a_hat = bcq.decode(bcq_cfg, act_dim, t.vae, o, uu)
        xi = jnp.tanh(MLP(bcq_cfg.actor_hidden, act_dim).apply(t.actor, o, a_hat))
        return q1, a_hat, xi
    return jax.vmap(one)(teachers, obs, act, u)


def _relabelled_next_obs(lab, idx, obs, act, nxt):
    """Next states of task j's context transitions for task i, [K_i, K_j, C, obs]: the next-state
    ensembles' mean where `lab` has `next_obs` (stored [K_i, K_j, N, obs], or a function of the
    context's (obs, act) recomputing it), else the recorded ones (tasks differing only in reward)."""
    k = idx.shape[0]
    rel = lab.get("next_obs")
    if rel is None:
        return jnp.broadcast_to(nxt[None], (k,) + nxt.shape)
    return rel(obs, act) if callable(rel) else rel[:, jnp.arange(k)[:, None], idx]


def relabelled_encoder_inputs(cfg: DistillConfig, method: Method, params, data, lab, idx, key):
    """Triplet loss and the fast-context posterior for the relabelling methods (spec §5.2 steps 1, 3).

    idx: [K, C] own context indices. Anchors are task-j context transitions accepted by task i's
    ensemble with rewards (and, where tasks differ in dynamics, next states) relabelled by it;
    negatives the same transitions as recorded; positives as many of task i's own context
    transitions, drawn without replacement. Task i's own transitions keep their recorded s'.
    """
    k, c = idx.shape
    k_pos, k_sel = jax.random.split(key)
    ar = jnp.arange(k)
    acc = lab["accept"][:, ar[:, None], idx]  # [K_i, K_j, C]
    rr = lab["reward"][:, ar[:, None], idx]
    ctx = take(data, idx)
    obs, act, nxt = ctx["obs"], ctx["actions"], ctx["next_obs"]
    own = S.context(obs, act, ctx["rewards"], nxt)  # [K, C, cdim]
    anchors = S.context(*(jnp.broadcast_to(x[None], (k,) + x.shape) for x in (obs, act)), rr,
                        _relabelled_next_obs(lab, idx, obs, act, nxt))  # [K_i, K_j, C, cdim]
    mu_o, var_o = S.encode(cfg, params.encoder, own)
    mu_a, var_a = S.encode(cfg, params.encoder, anchors)
    n = acc.sum(-1)  # [K_i, K_j]
    rank = jnp.argsort(jnp.argsort(jax.random.uniform(k_pos, acc.shape), -1), -1)
    pos_mask = rank < n[..., None]
    anchor = S.posterior(mu_a, var_a, acc)
    negative = S.posterior(mu_o[None], var_o[None], acc)
    positive = S.posterior(mu_o[:, None], var_o[:, None], pos_mask)
    valid = (n > 0) & ~jnp.eye(k, dtype=bool)
    trip, (d_pos, d_neg) = S.triplet_loss(anchor, positive, negative, valid, cfg.triplet_margin)

    # fast context: own C plus C accepted relabelled transitions of the other tasks, without replacement
    scores = jnp.where(acc.reshape(k, -1), jax.random.uniform(k_sel, (k, k * c)), -1.0)
    top, sel = jax.lax.top_k(scores, c)
    pick = lambda x: jnp.take_along_axis(x.reshape(k, k * c, -1), sel[..., None], axis=1)  # noqa: E731
    mu_f = jnp.concatenate([mu_o, pick(mu_a)], 1)
    var_f = jnp.concatenate([var_o, pick(var_a)], 1)
    mask_f = jnp.concatenate([jnp.ones((k, c), bool), top >= 0], 1)
    metrics = {"triplet": trip, "d_pos": jnp.sum(d_pos * valid) / jnp.maximum(valid.sum(), 1),
               "d_neg": jnp.sum(d_neg * valid) / jnp.maximum(valid.sum(), 1),
               "valid_pairs": valid.sum() / (k * (k - 1))}
    return (trip if method.triplet == "relabel" else 0.0), S.posterior(mu_f, var_f, mask_f), metrics


def loss_fn(cfg: DistillConfig, bcq_cfg: BCQConfig, method: Method, act_dim: int, params: S.Student,
            data, lab, teachers, qnorm, key):
    k, n = data["obs"].shape[:2]
    keys = jax.random.split(key, 6)
    c = cfg.context_size
    metrics = {}
    if method.relabel != "none":
        idx = jax.random.randint(keys[0], (k, c), 0, n)
        trip, (mu, var), metrics = relabelled_encoder_inputs(cfg, method, params, data, lab, idx, keys[1])
    elif method.triplet == "hard_negative":
        sets = cfg.hard_negative_sets
        idx = jax.random.randint(keys[0], (k, sets, 2 * c), 0, n)
        mu_s, var_s = S.posterior(*S.encode(cfg, params.encoder, _ctx(data, idx)))  # [K, S, L]
        trip = S.hard_negative_loss(mu_s, var_s, cfg.triplet_margin)
        pick = jax.random.randint(keys[1], (k,), 0, sets)
        mu, var = mu_s[jnp.arange(k), pick], var_s[jnp.arange(k), pick]
        metrics = {"triplet": trip}
    else:
        idx = jax.random.randint(keys[0], (k, 2 * c), 0, n)
        mu, var = S.posterior(*S.encode(cfg, params.encoder, _ctx(data, idx)))
        trip = 0.0

    z = mu + jnp.sqrt(var) * jax.random.normal(keys[2], mu.shape)  # reparameterised, [K, L]
    kl = cfg.kl_weight * jnp.sum(S.prior_kl(mu, var))  # summed over tasks (spec §5.2 step 5)

    b = cfg.batch_size
    tidx = jax.random.randint(keys[3], (k, b), 0, n)
    batch = take(data, tidx)
    obs, act = batch["obs"], batch["actions"]
    u = bcq.sample_latent(keys[4], (k, b, 2 * act_dim))
    q_t, a_hat, xi_t = jax.lax.stop_gradient(teacher_targets(bcq_cfg, act_dim, teachers, obs, act, u))
    q_t = (q_t - qnorm[0]) / qnorm[1]
    zb = jnp.broadcast_to(z[:, None], (k, b, z.shape[-1]))
    zs = jax.lax.stop_gradient(zb)  # G and xi do not train the encoder (Eq. 4, 5)
    loss_q = jnp.mean((S.q_value(cfg, act_dim, params, obs, act, zb) - q_t) ** 2)
    loss_g = jnp.mean((S.generate(cfg, act_dim, params, obs, u, zs) - a_hat) ** 2)
    loss_xi = jnp.mean((S.perturbation(cfg, act_dim, params, obs, a_hat, zs) - xi_t) ** 2)
    total = cfg.triplet_weight * trip + kl + loss_q + loss_g + loss_xi  # Eq. 10 plus the KL of Eq. 3
    metrics.update({"loss": total, "q": loss_q, "g": loss_g, "xi": loss_xi, "kl": kl / cfg.kl_weight if cfg.kl_weight else kl,
                    "posterior_std": jnp.mean(jnp.sqrt(var))})
    return total, metrics


def optimizer(cfg: DistillConfig):
    """One Adam over (encoder, Q, G, xi) = four Adams: the moments are per parameter."""
    lr = optax.cosine_decay_schedule(cfg.lr, cfg.steps, alpha=0.1) if cfg.lr_decay else cfg.lr
    return optax.adam(lr)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4), donate_argnums=(5,))
def _chunk(cfg: DistillConfig, bcq_cfg: BCQConfig, method: Method, act_dim: int, length: int, carry,
           data, lab, teachers, qnorm):
    opt = optimizer(cfg)

    def step(c, key):
        params, opt_state = c
        grads, metrics = jax.grad(lambda p: loss_fn(cfg, bcq_cfg, method, act_dim, p, data, lab, teachers,
                                                    qnorm, key), has_aux=True)(params)
        updates, opt_state = opt.update(grads, opt_state)
        return (optax.apply_updates(params, updates), opt_state), metrics

    key, sub = jax.random.split(carry["key"])
    (params, opt_state), metrics = jax.lax.scan(step, (carry["params"], carry["opt"]), jax.random.split(sub, length))
    return {**carry, "params": params, "opt": opt_state, "key": key,
            "metrics": jax.tree.map(jnp.mean, metrics)}


@functools.partial(jax.jit, static_argnums=(0, 1))
def q_normalizer(bcq_cfg: BCQConfig, act_dim: int, teachers, data):
    """Mean and std of the teachers' Q1 on (up to 4096 of) their own transitions, over all tasks."""
    obs, act = data["obs"][:, :4096], data["actions"][:, :4096]
    q = jax.vmap(lambda t, o, a: DoubleQ(bcq_cfg.critic_hidden).apply(t.critic, o, a)[0])(teachers, obs, act)
    return jnp.stack([q.mean(), q.std() + 1e-6])


def distill(cfg: DistillConfig, bcq_cfg: BCQConfig, method_name: str, act_dim: int, data: dict, lab: dict | None,
            teachers, key, ckpt: Path | None = None, progress: Callable[[int, int], None] | None = None,
            on_eval: Callable[[S.Student, int, dict], float | None] | None = None):
    """Train the student; returns (student, Q-target normaliser).

    `on_eval(params, step, metrics)` is called every `cfg.eval_every` steps; if it returns a number
    (the protocol's score on the *training* tasks) the best-scoring student is returned, as the
    teachers are chosen by their online score on their own tasks (spec §3); else the last one.
    """
    method = METHODS[method_name]
    obs_dim = data["obs"].shape[-1]
    k_init, k_run = jax.random.split(key)
    params = S.init(cfg, k_init, obs_dim, act_dim)
    qnorm = jnp.array([0.0, 1.0])
    if cfg.q_target_scale > 0:
        qnorm = q_normalizer(bcq_cfg, act_dim, teachers, data) * jnp.array([1.0, 1.0 / cfg.q_target_scale])
    metrics0 = jax.eval_shape(lambda: loss_fn(cfg, bcq_cfg, method, act_dim, params, data, lab, teachers, qnorm,
                                              k_run)[1])
    carry = {"params": params, "opt": optimizer(cfg).init(params), "key": k_run, "qnorm": jnp.copy(qnorm),
             "metrics": jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metrics0),
             "best": jax.tree.map(jnp.copy, params), "best_score": jnp.array(-jnp.inf)}

    def advance(c, done, n):
        return _chunk(cfg, bcq_cfg, method, act_dim, n, c, data, lab, teachers, qnorm)

    def after(c, done):
        if on_eval is None:
            return c
        score = on_eval(c["params"], done, {k: float(v) for k, v in jax.device_get(c["metrics"]).items()})
        if score is not None and score > float(c["best_score"]):
            c = {**c, "best": jax.tree.map(jnp.copy, c["params"]), "best_score": jnp.asarray(score)}
        return c

    carry = run_chunks(carry, cfg.steps, cfg.eval_every, advance, ckpt, progress, after)
    chosen = carry["best"] if bool(jnp.isfinite(carry["best_score"])) else carry["params"]
    return chosen, np.asarray(carry["qnorm"])


# ----------------------------------------------------------- the method contract (`mbml.methods`)

def init(cfg: RunConfig, key, obs_dim: int, act_dim: int) -> S.Student:
    return S.init(cfg.distill, key, obs_dim, act_dim)


def agent(cfg: RunConfig, act_dim: int) -> StudentAgent:
    return StudentAgent(cfg.distill, act_dim, cfg.bcq.phi, cfg.eval.num_candidates)


def transfer_critics(cfg: RunConfig, saved: dict) -> tuple[dict, dict]:
    """The student's Q as both of `mbml transfer`'s critics: an MLP on s | a | z, rescaled from its
    normalised training targets to reward units (`transfer.denormalised_q`)."""
    from mbml.transfer import denormalised_q

    q = denormalised_q(saved["params"].q, saved["qnorm"])
    return q, q


def critic_hidden(cfg: RunConfig) -> tuple[int, ...]:
    """The hidden sizes of the critics `transfer_critics` gives."""
    return tuple(cfg.distill.q_hidden)
