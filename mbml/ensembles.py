"""Stage `ensembles`: per-task reward ensembles and relabelling of the other tasks' data (spec §4).

Each task i gets `members` reward nets (s, a) -> r trained on task i's batch only; all members see
the same mini-batch (no bootstrap), so their spread is the epistemic uncertainty of initialisation.
A transition of task j is accepted for task i iff the members' (unbiased) std is under the threshold;
accepted transitions are relabelled with the members' mean (Eq. 7). The whole relabelling is
computed once, before distillation, as the paper notes.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mbml.config import EnsembleConfig
from mbml.data import Dataset
from mbml.nets import MLP, lift
from mbml.teachers import sample
from mbml.train_loop import run_chunks


def _net(cfg: EnsembleConfig):
    return MLP(cfg.hidden, 1)


def predict(cfg: EnsembleConfig, members, obs, act):
    """Predictions of every member: [members, n]."""
    return jax.vmap(lambda p: _net(cfg).apply(p, obs, act)[..., 0])(members)


@functools.partial(jax.jit, static_argnums=(0, 1, 2), donate_argnums=(3,))
def _chunk(cfg: EnsembleConfig, lift_mode: str, length: int, carry, data):
    opt = optax.adam(cfg.lr)

    def one(members, opt_state, data_k, key):
        def body(c, k):
            params, o = c
            b = sample(data_k, k, cfg.batch_size)
            # sum over members of each member's MSE: every member gets the same mini-batch
            loss = lambda p: jnp.sum(jnp.mean((predict(cfg, p, b["obs"], b["actions"]) - b["rewards"]) ** 2, -1))  # noqa: E731
            g = jax.grad(loss)(params)
            u, o = opt.update(g, o)
            return (optax.apply_updates(params, u), o), None
        return jax.lax.scan(body, (members, opt_state), jax.random.split(key, length))[0]

    keys = jax.vmap(jax.random.split)(carry["key"])
    members, opt_state = lift(one, lift_mode)(carry["members"], carry["opt"], data, keys[:, 0])
    return {"members": members, "opt": opt_state, "key": keys[:, 1]}


def train_ensembles(cfg: EnsembleConfig, data: dict, key, lift_mode: str = "vmap", ckpt: Path | None = None,
                    progress: Callable[[int, int], None] | None = None):
    """Train one ensemble per task; returns member params stacked [K, members, ...]."""
    k, _, obs_dim = data["obs"].shape
    act_dim = data["actions"].shape[-1]
    k_init, k_run = jax.random.split(key)
    init_one = lambda kk: _net(cfg).init(kk, jnp.zeros((1, obs_dim)), jnp.zeros((1, act_dim)))  # noqa: E731
    members = jax.vmap(jax.vmap(init_one))(jax.random.split(k_init, (k, cfg.members)))
    carry = {"members": members, "opt": jax.vmap(optax.adam(cfg.lr).init)(members),
             "key": jax.random.split(k_run, k)}
    chunk = max(cfg.steps // 10, 1)
    carry = run_chunks(carry, cfg.steps, chunk, lambda c, d, n: _chunk(cfg, lift_mode, n, c, data), ckpt, progress)
    return carry["members"]


@functools.partial(jax.jit, static_argnums=(0,))
def _mean_std(cfg: EnsembleConfig, members, obs, act):
    """Mean and unbiased std over members of every task's ensemble: [K_i, n] each."""
    p = jax.vmap(lambda m: predict(cfg, m, obs, act))(members)
    return p.mean(1), p.std(1, ddof=1)


def relabel(cfg: EnsembleConfig, members, ds: Dataset, true_reward: Callable | None = None, chunk: int = 65536):
    """Ensemble mean and std of every task's reward model on every task's transitions.

    Returns dict with `mean`, `std` [K_i, K_j, N] (float32), the per-task `threshold` [K_i], `accept`
    [K_i, K_j, N] (bool; False on the diagonal) and, if the true reward is known, `true` [K_i, K_j, N].
    """
    k, n = ds.num_tasks, ds.num_transitions
    mean = np.zeros((k, k, n), np.float32)
    std = np.zeros((k, k, n), np.float32)
    for j in range(k):
        for s in range(0, n, chunk):
            obs = jnp.asarray(ds.observations[j, s:s + chunk])
            act = jnp.asarray(ds.actions[j, s:s + chunk])
            m, sd = _mean_std(cfg, members, obs, act)
            mean[:, j, s:s + chunk], std[:, j, s:s + chunk] = np.asarray(m), np.asarray(sd)
    threshold = thresholds(cfg, std)
    out = {"mean": mean, "std": std, "threshold": threshold, "accept": accept_mask(std, threshold)}
    if true_reward is not None:
        out["true"] = true_rewards(ds, true_reward)
    return out


def thresholds(cfg: EnsembleConfig, std: np.ndarray) -> np.ndarray:
    """Per-task std threshold: the fixed `std_threshold`, or a quantile of task i's std on its own data."""
    k = std.shape[0]
    if cfg.std_threshold > 0:
        return np.full(k, cfg.std_threshold, np.float32)
    return np.array([np.quantile(std[i, i], cfg.std_quantile) for i in range(k)], np.float32)


def accept_mask(std: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """The relabelling filter (spec §4.3): task j's transition is accepted for task i iff
    std_i < threshold_i, and never for its own task (i == j). std: [K_i, K_j, N]."""
    k = std.shape[0]
    accept = std < np.asarray(threshold)[:, None, None]
    accept[np.arange(k), np.arange(k)] = False
    return accept


def true_rewards(ds: Dataset, true_reward: Callable) -> np.ndarray:
    """True reward of task i on every transition of task j: [K_i, K_j, N]."""
    k = ds.num_tasks
    out = np.zeros((k, k, ds.num_transitions), np.float32)
    for j in range(k):
        extras = {name: np.asarray(v[j]) for name, v in ds.extras.items()}
        for i in range(k):
            out[i, j] = true_reward(ds.tasks[i], np.asarray(ds.observations[j]), np.asarray(ds.actions[j]),
                                    np.asarray(ds.next_observations[j]), extras)
    return out


def relabel_stats(lab: dict) -> dict:
    """Acceptance rate over off-diagonal pairs and, if known, |error| of accepted relabelled rewards."""
    k = lab["accept"].shape[0]
    off = ~np.eye(k, dtype=bool)[:, :, None] & np.ones_like(lab["accept"])
    acc = lab["accept"]
    out = {"accept_rate": float(acc.sum() / off.sum()), "threshold_mean": float(np.mean(lab["threshold"]))}
    if "true" in lab:
        err = np.abs(lab["mean"] - lab["true"])
        out["abs_error_accepted"] = float(err[acc].mean()) if acc.any() else float("nan")
        out["abs_error_rejected"] = float(err[off & ~acc].mean()) if (off & ~acc).any() else float("nan")
        out["reward_std"] = float(np.std(lab["true"]))
    return out
