"""Stage `teachers`: one BCQ per training task, lifted over the task axis (spec §3).

Every `eval_every` steps each teacher is evaluated online on its own task and the best evaluated
checkpoint is kept, as the authors' model selection does. Without a simulator (data imported
without a family) nothing is evaluated and the last checkpoint is kept.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from mbml import bcq, rollout
from mbml.config import BCQConfig
from mbml.data import Dataset
from mbml.families import Family
from mbml.nets import lift
from mbml.train_loop import run_chunks
from mbml.transitions import device_data, sample


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3), donate_argnums=(4,))
def _chunk(cfg: BCQConfig, act_dim: int, lift_mode: str, length: int, carry, data):
    def one(teacher, data_k, key):
        def body(t, k):
            k_b, k_u = jax.random.split(k)
            return bcq.update(cfg, t, sample(data_k, k_b, cfg.batch_size), k_u, act_dim)[0], None
        return jax.lax.scan(body, teacher, jax.random.split(key, length))[0]

    keys = jax.vmap(lambda k: jax.random.split(k))(carry["key"])
    teachers = lift(one, lift_mode, (*cfg.actor_hidden, *cfg.critic_hidden, *cfg.vae_hidden))(
        carry["teacher"], data, keys[:, 0])
    return {**carry, "teacher": teachers, "key": keys[:, 1]}


def policy(cfg: BCQConfig, act_dim: int, teacher: bcq.Teacher):
    return lambda obs, key: bcq.act(cfg, act_dim, teacher, obs, key)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def evaluate(family: Family, cfg: BCQConfig, episodes: int, teachers: bcq.Teacher, tasks, key):
    """Mean return of each teacher on its own task: [K]."""
    def one(t, task, k):
        return rollout.mean_return(family, policy(cfg, family.act_dim, t), task, k, episodes)
    return jax.vmap(one)(teachers, tasks, jax.random.split(key, tasks.shape[0]))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _act_batch(cfg: BCQConfig, act_dim: int, teachers: bcq.Teacher, obs, key):
    keys = jax.random.split(key, obs.shape[0])
    return jax.vmap(lambda t, o, k: bcq.act(cfg, act_dim, t, o, k))(teachers, obs, keys)


def evaluate_own_tasks(family: Family, cfg: BCQConfig, episodes: int, teachers: bcq.Teacher, tasks, key):
    """Mean return of teacher i on task i: jitted rollouts for pure-JAX families, host-stepped otherwise."""
    if family.jax_env is not None:
        return evaluate(family, cfg, episodes, teachers, jnp.asarray(tasks, jnp.float32), key)
    from mbml.hostenv import mean_returns

    return jnp.asarray(mean_returns(family, np.asarray(tasks), lambda obs, k: _act_batch(cfg, family.act_dim, teachers, obs, k),
                                    key, episodes))


def train_teachers(family: Family, cfg: BCQConfig, ds: Dataset, key, lift_mode: str = "vmap",
                   ckpt: Path | None = None, progress: Callable[[int, int], None] | None = None):
    """Train K teachers; return (best teachers stacked over tasks, eval curve [evals, K]); without a
    simulator (`family.simulated`) the last teachers and a curve of no evaluations [0, K]."""
    ds = ds.head(cfg.dataset_size)
    data = device_data(ds)
    tasks = jnp.asarray(ds.tasks, jnp.float32)
    k = ds.num_tasks
    k_init, k_run, k_eval = jax.random.split(key, 3)
    teachers = jax.vmap(lambda kk: bcq.init(cfg, kk, family.obs_dim, family.act_dim))(jax.random.split(k_init, k))
    n_evals = -(-cfg.steps // cfg.eval_every) if family.simulated else 0
    carry = {"teacher": teachers, "best": jax.tree.map(jnp.copy, teachers), "best_score": jnp.full(k, -jnp.inf),
             "curve": jnp.full((n_evals, k), jnp.nan), "key": jax.random.split(k_run, k)}

    def advance(c, done, n):
        return _chunk(cfg, family.act_dim, lift_mode, n, c, data)

    def after(c, done):
        i = -(-done // cfg.eval_every) - 1
        score = evaluate_own_tasks(family, cfg, cfg.eval_episodes, c["teacher"], tasks, jax.random.fold_in(k_eval, done))
        better = score > c["best_score"]
        best = jax.tree.map(lambda b, t: jnp.where(better.reshape((-1,) + (1,) * (t.ndim - 1)), t, b),
                            c["best"], c["teacher"])
        return {**c, "best": best, "best_score": jnp.maximum(score, c["best_score"]),
                "curve": c["curve"].at[i].set(score)}

    carry = run_chunks(carry, cfg.steps, cfg.eval_every, advance, ckpt, progress, after if n_evals else None)
    return carry["best"] if n_evals else carry["teacher"], np.asarray(carry["curve"])
