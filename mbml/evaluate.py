"""The evaluation protocol on unseen tasks (spec §6) and the task-inference diagnostic.

Per task: 5 episodes; the first uses z from the prior N(0, I); after every episode the posterior is
recomputed from all transitions collected so far on that task and a fresh z is sampled. Episodes 1
and 2 are discarded: the score is the mean undiscounted return of episodes 3-5.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mbml import rollout, student as S
from mbml.config import DistillConfig, EvalConfig
from mbml.families import Family
from mbml.transitions import take


def score(returns, score_from: int):
    """Mean of the returns of episodes score_from+1 ... (episodes 3-5 for score_from=2): [..., E] -> [...]."""
    return jnp.mean(returns[..., score_from:], axis=-1)


def adapt_one_task(family: Family, cfg: DistillConfig, ev: EvalConfig, phi: float, params: S.Student, task, key,
                   use_mean: bool = False) -> dict:
    """Run the protocol on one task. Returns per-episode `returns` [E], `posterior_means` [E+1, latent]
    (the prior's first), `posterior_std` [E] (mean std after each episode) and `last_obs` [E, obs]
    (where each episode ended). `use_mean` acts with the posterior mean from episode 2 on instead
    of a sample (an analysis switch; the protocol samples)."""
    h, e = family.horizon, ev.episodes
    cdim = 2 * family.obs_dim + family.act_dim + 1
    buf, mask = jnp.zeros((e * h, cdim)), jnp.zeros(e * h, bool)
    mu, var = jnp.zeros(cfg.latent_dim), jnp.ones(cfg.latent_dim)  # the prior
    returns, means, stds, last = [], [mu], [], []
    for i in range(e):  # unrolled: e is small
        key, kz, kr = jax.random.split(key, 3)
        noise = 0.0 if use_mean and i > 0 else 1.0  # episode 1 always samples the prior
        z = mu + noise * jnp.sqrt(var) * jax.random.normal(kz, mu.shape)
        pol = lambda obs, k, z=z: S.act(cfg, family.act_dim, phi, ev.num_candidates, params, obs, z, k)  # noqa: E731
        ret, tr = rollout.episode(family, pol, task, kr)
        ctx = S.context(tr["obs"], tr["actions"], tr["rewards"], tr["next_obs"])
        buf = jax.lax.dynamic_update_slice(buf, ctx, (i * h, 0))
        mask = jax.lax.dynamic_update_slice(mask, tr["valid"], (i * h,))
        mu, var = S.posterior(*S.encode(cfg, params.encoder, buf), mask)
        returns.append(ret), means.append(mu), stds.append(jnp.sqrt(var).mean()), last.append(tr["next_obs"][-1])
    return {"returns": jnp.stack(returns), "posterior_means": jnp.stack(means), "posterior_std": jnp.stack(stds),
            "last_obs": jnp.stack(last)}


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def evaluate_student(family: Family, cfg: DistillConfig, ev: EvalConfig, phi: float, params, tasks, key):
    """Protocol on every task: dict of per-episode `returns` [T, E], `score` [T], `posterior_means` [T, E+1, L]."""
    keys = jax.random.split(key, tasks.shape[0])
    out = jax.vmap(lambda t, k: adapt_one_task(family, cfg, ev, phi, params, t, k))(tasks, keys)
    return {"returns": out["returns"], "score": score(out["returns"], ev.score_from),
            "posterior_means": out["posterior_means"]}


@functools.partial(jax.jit, static_argnums=(0, 1))
def inference_diagnostic(cfg: DistillConfig, size: int, encoder, data, true_rewards, key, draws: int = 16):
    """How the encoder infers a task when states/actions and rewards disagree (paper Fig. 1, §3.2).

    Centroid c_k = mean posterior mean over `draws` contexts of task k's own data. For each ordered
    pair (i, j), i != j: a context of task-j transitions whose rewards are task i's *true* rewards;
    the posterior mean is assigned to its nearest centroid. Returns the fraction assigned to i (the
    encoder reads rewards) and to j (it reads states and actions), over pairs and draws.
    """
    k, n = data["obs"].shape[:2]
    k1, k2 = jax.random.split(key)

    def post(obs, act, rew, nxt):
        return S.posterior(*S.encode(cfg, encoder, S.context(obs, act, rew, nxt)))[0]

    def centroid(kk):
        idx = jax.random.randint(kk, (k, size), 0, n)
        b = take(data, idx)
        return jax.vmap(post)(b["obs"], b["actions"], b["rewards"], b["next_obs"])

    centroids = jax.vmap(centroid)(jax.random.split(k1, draws)).mean(0)  # [K, L]

    def one_draw(kk):
        idx = jax.random.randint(kk, (k, size), 0, n)  # per task j
        b = take(data, idx)
        rew = jax.vmap(lambda r: jax.vmap(lambda x, i: x[i])(r, idx))(true_rewards)  # [K_i, K_j, size]
        mu = jax.vmap(lambda r: jax.vmap(post)(b["obs"], b["actions"], r, b["next_obs"]))(rew)  # [K_i, K_j, L]
        d = jnp.sum((mu[:, :, None] - centroids[None, None]) ** 2, -1)
        nearest = jnp.argmin(d, -1)  # [K_i, K_j]
        return nearest == jnp.arange(k)[:, None], nearest == jnp.arange(k)[None, :]

    to_i, to_j = jax.vmap(one_draw)(jax.random.split(k2, draws))
    off = ~jnp.eye(k, dtype=bool)
    return {"reads_rewards": jnp.sum(to_i * off) / (draws * off.sum()),
            "reads_states": jnp.sum(to_j * off) / (draws * off.sum())}


def summarize(x) -> dict:
    return {k: np.asarray(v).tolist() for k, v in jax.device_get(x).items()}
