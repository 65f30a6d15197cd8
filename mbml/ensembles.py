"""Stage `ensembles`: per-task prediction ensembles and relabelling of the other tasks' data (spec §4).

Each task i gets `members` reward nets (s, a) -> r trained on task i's batch only; all members see
the same mini-batch (no bootstrap), so their spread is the epistemic uncertainty of initialisation.
A transition of task j is accepted for task i iff the members' (unbiased) std is under the threshold;
accepted transitions are relabelled with the members' mean (Eq. 7). Where tasks differ in dynamics
(WalkerParam, spec §4.2), task i also gets next-state nets (s, a) -> s' (the absolute next
observation), trained the same way; a transition is then accepted only if the next-state std too is
under its threshold, and takes the members' mean next state. The whole relabelling is computed once,
before distillation, as the paper notes.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mbml.config import EnsembleConfig
from mbml.data import Dataset
from mbml.nets import MLP, lift
from mbml.train_loop import run_chunks
from mbml.transitions import sample

ACTIVATION_BUDGET = 2 ** 27
"""Floats per layer activation in one relabelling call (512 MB): bounds the rows per call."""


class Target(NamedTuple):
    """What an ensemble learns from (s, a), and how: a dataset field of `size` numbers per transition."""

    field: str  # "rewards" (size 1, predictions squeezed to scalars) or "next_obs"
    size: int
    hidden: tuple[int, ...]
    steps: int


def reward_target(cfg: EnsembleConfig) -> Target:
    return Target("rewards", 1, tuple(cfg.hidden), cfg.steps)


def next_state_target(cfg: EnsembleConfig, obs_dim: int) -> Target:
    return Target("next_obs", obs_dim, tuple(cfg.next_state_hidden), cfg.next_state_steps)


def predict(target: Target, members, obs, act):
    """Predictions of every member: [members, n] (rewards) or [members, n, obs] (next states)."""
    out = jax.vmap(lambda p: MLP(target.hidden, target.size).apply(p, obs, act))(members)
    return out[..., 0] if target.field == "rewards" else out


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3), donate_argnums=(4,))
def _chunk(cfg: EnsembleConfig, target: Target, lift_mode: str, length: int, carry, data):
    opt = optax.adam(cfg.lr)

    def one(members, opt_state, data_k, key):
        def body(c, k):
            params, o = c
            b = sample(data_k, k, cfg.batch_size)

            def loss(p):  # sum over members of each member's MSE: every member gets the same mini-batch
                err = (predict(target, p, b["obs"], b["actions"]) - b[target.field]) ** 2
                return jnp.sum(jnp.mean(err.reshape(err.shape[0], -1), -1))
            u, o = opt.update(jax.grad(loss)(params), o)
            return (optax.apply_updates(params, u), o), None
        return jax.lax.scan(body, (members, opt_state), jax.random.split(key, length))[0]

    keys = jax.vmap(jax.random.split)(carry["key"])
    members, opt_state = lift(one, lift_mode, target.hidden)(carry["members"], carry["opt"], data, keys[:, 0])
    return {"members": members, "opt": opt_state, "key": keys[:, 1]}


def init_members(cfg: EnsembleConfig, target: Target, k: int, obs_dim: int, act_dim: int, key):
    """Freshly initialised member params, stacked [K, members, ...]."""
    net = MLP(target.hidden, target.size)
    init_one = lambda kk: net.init(kk, jnp.zeros((1, obs_dim)), jnp.zeros((1, act_dim)))  # noqa: E731
    return jax.vmap(jax.vmap(init_one))(jax.random.split(key, (k, cfg.members)))


def train_ensembles(cfg: EnsembleConfig, target: Target, data: dict, key, lift_mode: str = "vmap",
                    ckpt: Path | None = None, progress: Callable[[int, int], None] | None = None,
                    rows: np.ndarray | None = None):
    """Train one ensemble per task on its own data (`device_data`; only the transitions `rows` of
    every task, where given); returns member params stacked [K, members, ...]."""
    k, _, obs_dim = data["obs"].shape
    if rows is not None:
        data = {**data, "rows": jnp.broadcast_to(jnp.asarray(rows, jnp.int32), (k, len(rows)))}
    k_init, k_run = jax.random.split(key)
    members = init_members(cfg, target, k, obs_dim, data["actions"].shape[-1], k_init)
    carry = {"members": members, "opt": jax.vmap(optax.adam(cfg.lr).init)(members),
             "key": jax.random.split(k_run, k)}
    chunk = max(target.steps // 10, 1)
    carry = run_chunks(carry, target.steps, chunk, lambda c, d, n: _chunk(cfg, target, lift_mode, n, c, data),
                       ckpt, progress)
    return carry["members"]


def heldout(n: int, fraction: float) -> np.ndarray:
    """[n] bool: the transitions kept out of next-state training to measure its error (every
    round(1 / fraction)-th one, so they span the whole collection; none if fraction is 0)."""
    held = np.zeros(n, bool)
    if fraction > 0:
        held[::max(round(1 / fraction), 2)] = True
    return held


@functools.partial(jax.jit, static_argnums=(0,))
def _mean_std(target: Target, members, obs, act):
    """Mean [K_i, n(, obs)] and unbiased std [K_i, n] over members of every task's ensemble; the
    next-state std is averaged over the observation dims (spec §4.3)."""
    p = jax.vmap(lambda m: predict(target, m, obs, act))(members)
    std = p.std(1, ddof=1) if p.shape[1] > 1 else jnp.zeros_like(p[:, 0])  # one member: no spread
    return p.mean(1), std.reshape(std.shape[:2] + (-1,)).mean(-1)


def ensemble_outputs(target: Target, members, ds: Dataset, keep_mean: bool = True, tick: Callable = lambda: None):
    """Every task i's ensemble on every task j's transitions: mean [K_i, K_j, N(, obs)] (None unless
    `keep_mean`) and std [K_i, K_j, N], float32. Rows go in calls sized by ACTIVATION_BUDGET; `tick()`
    after each task j."""
    k, n = ds.num_tasks, ds.num_transitions
    k_i, m = jax.tree.leaves(members)[0].shape[:2]
    rows = max(1, ACTIVATION_BUDGET // (k_i * m * max(target.hidden + (target.size,))))
    shape = (k_i, k, n) + (() if target.field == "rewards" else (target.size,))
    mean = np.zeros(shape, np.float32) if keep_mean else None
    std = np.zeros((k_i, k, n), np.float32)
    for j in range(k):
        for s in range(0, n, rows):
            mu, sd = _mean_std(target, members, jnp.asarray(ds.observations[j, s:s + rows]),
                               jnp.asarray(ds.actions[j, s:s + rows]))
            std[:, j, s:s + rows] = np.asarray(sd)
            if keep_mean:
                mean[:, j, s:s + rows] = np.asarray(mu)
        tick()
    return mean, std


def relabel(cfg: EnsembleConfig, members, ds: Dataset, true_reward: Callable | None = None,
            next_members=None, held: np.ndarray | None = None, progress: Callable | None = None):
    """Ensemble mean and std of every task's reward model on every task's transitions.

    Returns dict with `mean`, `std` [K_i, K_j, N] (float32), the per-task `threshold` [K_i], `accept`
    [K_i, K_j, N] (bool; False on the diagonal) and, if the true reward is known, `true` [K_i, K_j, N].
    With next-state ensembles (`next_members`, trained without the `held` transitions) `accept` is
    the combined filter and the entries of `relabel_next_states` are added. `progress(done, total)`
    is called after each pass over one task's transitions.
    """
    total = ds.num_tasks * (1 + (next_members is not None) + (true_reward is not None))
    passes = iter(range(1, total + 1))
    tick = (lambda: progress(next(passes), total)) if progress else (lambda: None)  # noqa: E731
    if progress:
        progress(0, total)
    mean, std = ensemble_outputs(reward_target(cfg), members, ds, tick=tick)
    threshold = thresholds(cfg, std)
    out = {"mean": mean, "std": std, "threshold": threshold, "accept": accept_mask(std, threshold)}
    if next_members is not None:
        out.update(relabel_next_states(cfg, next_members, ds, held, tick))
        out["accept"] &= accept_mask(out["next_std"], out["next_threshold"])
    if true_reward is not None:
        out["true"] = true_rewards(ds, true_reward, tick)
    return out


def relabel_next_states(cfg: EnsembleConfig, members, ds: Dataset, held: np.ndarray | None = None,
                        tick: Callable = lambda: None) -> dict:
    """The next-state half of the relabelling: `next_std` [K_i, K_j, N], `next_threshold` [K_i], the
    mean predicted next states `next_obs` [K_i, K_j, N, obs] if they fit `cfg.next_state_store_mb`
    (else distillation recomputes them: `next_state_relabeller`), and per task the held-out mean
    |error| of the ensemble mean on its own task (`next_heldout_error` [K]) beside that of predicting
    no change (`next_heldout_change` [K])."""
    k, n, obs_dim = ds.observations.shape
    target = next_state_target(cfg, obs_dim)
    store = k * k * n * obs_dim * 4 <= cfg.next_state_store_mb * 2 ** 20
    mean, std = ensemble_outputs(target, members, ds, keep_mean=store, tick=tick)
    out = {"next_std": std, "next_threshold": thresholds(cfg, std, cfg.next_state_std_threshold)}
    if store:
        out["next_obs"] = mean
    if held is not None and held.any():
        rows = np.flatnonzero(held)
        obs, act = (jnp.asarray(a[:, rows]) for a in (ds.observations, ds.actions))
        nxt = jnp.asarray(np.stack([ds.next_obs(t, rows) for t in range(k)]))
        pred = _own_mean(target, members, obs, act)
        out["next_heldout_error"] = np.asarray(jnp.abs(pred - nxt).mean((1, 2)))
        out["next_heldout_change"] = np.asarray(jnp.abs(obs - nxt).mean((1, 2)))
    return out


@functools.partial(jax.jit, static_argnums=(0,))
def _own_mean(target: Target, members, obs, act):
    """Each task's members' mean on its own (s, a): [K, n, ...], one task after another."""
    return jax.lax.map(lambda a: predict(target, *a).mean(0), (members, obs, act))


@functools.partial(jax.jit, static_argnums=(0,))
def next_state_mean(target: Target, members, obs, act):
    """Members' mean next state of every task i for every task j's (s, a): [K_j, C, obs] -> [K_i, K_j, C, obs].

    Tasks i go one after another (lax.map), so activations stay [members, K_j * C, hidden]."""
    kj, c = obs.shape[:2]
    flat = lambda x: x.reshape(kj * c, x.shape[-1])  # noqa: E731
    out = jax.lax.map(lambda m: predict(target, m, flat(obs), flat(act)).mean(0), members)
    return out.reshape(out.shape[0], kj, c, -1)


def next_state_relabeller(target: Target, members) -> Callable:
    """`lab["next_obs"]` when the mean next states were not stored: a jit-compatible function of the
    context's (obs [K_j, C, obs], actions) that recomputes them from the ensembles every step."""
    return jax.tree_util.Partial(functools.partial(next_state_mean, target), members)


def thresholds(cfg: EnsembleConfig, std: np.ndarray, fixed: float | None = None) -> np.ndarray:
    """Per-task std threshold: `fixed` (default `cfg.std_threshold`) if > 0, else the `std_quantile`
    quantile of task i's std on its own data; infinite (no filter) with a single member."""
    k = std.shape[0]
    fixed = cfg.std_threshold if fixed is None else fixed
    if cfg.members == 1:  # a single network has no spread to filter by: accept every relabelled transition
        return np.full(k, np.inf, np.float32)
    if fixed > 0:
        return np.full(k, fixed, np.float32)
    return np.array([np.quantile(std[i, i], cfg.std_quantile) for i in range(k)], np.float32)


def accept_mask(std: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """The relabelling filter (spec §4.3): task j's transition is accepted for task i iff
    std_i < threshold_i, and never for its own task (i == j). std: [K_i, K_j, N]."""
    k = std.shape[0]
    accept = std < np.asarray(threshold)[:, None, None]
    accept[np.arange(k), np.arange(k)] = False
    return accept


def true_rewards(ds: Dataset, true_reward: Callable, tick: Callable = lambda: None) -> np.ndarray:
    """True reward of task i on every transition of task j: [K_i, K_j, N] (`tick()` after each j)."""
    k = ds.num_tasks
    out = np.zeros((k, k, ds.num_transitions), np.float32)
    for j in range(k):
        extras = {name: np.asarray(v[j]) for name, v in ds.extras.items()}
        obs, act, nxt = np.asarray(ds.observations[j]), np.asarray(ds.actions[j]), ds.next_obs(j)
        for i in range(k):
            out[i, j] = true_reward(ds.tasks[i], obs, act, nxt, extras)
        tick()
    return out


def relabel_stats(lab: dict) -> dict:
    """Acceptance rate over off-diagonal pairs and, if known, |error| of accepted relabelled rewards;
    with next-state ensembles also the rates of each filter alone and the held-out next-state error."""
    k = lab["accept"].shape[0]
    off = ~np.eye(k, dtype=bool)[:, :, None] & np.ones_like(lab["accept"])
    acc = lab["accept"]
    out = {"accept_rate": float(acc.sum() / off.sum()), "threshold_mean": float(np.mean(lab["threshold"]))}
    if "true" in lab:
        err = np.abs(lab["mean"] - lab["true"])
        out["abs_error_accepted"] = float(err[acc].mean()) if acc.any() else float("nan")
        out["abs_error_rejected"] = float(err[off & ~acc].mean()) if (off & ~acc).any() else float("nan")
        out["reward_std"] = float(np.std(lab["true"]))
    if "next_std" in lab:
        out.update(_next_state_stats(lab, off.sum()))
    return out


def _next_state_stats(lab: dict, pairs: int) -> dict:
    rate = lambda std, thr: float(accept_mask(std, thr).sum() / pairs)  # noqa: E731
    out = {"accept_rate_reward": rate(lab["std"], lab["threshold"]),
           "accept_rate_next_state": rate(lab["next_std"], lab["next_threshold"]),
           "next_state_threshold_mean": float(np.mean(lab["next_threshold"])),
           "next_state_stored": float("next_obs" in lab)}
    if "next_heldout_error" in lab:
        out["next_state_heldout_abs_error"] = float(np.mean(lab["next_heldout_error"]))
        out["next_state_heldout_abs_change"] = float(np.mean(lab["next_heldout_change"]))
    return out
