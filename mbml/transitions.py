"""Transitions on the device: what the learners sample from, next observations derived, not copied.

`device_data(ds)` holds each task's observations once; transition t's next observation is
`obs[t + 1]`, except where `final_slot[t] >= 0` (an episode end, or the last transition), where it
is row `final_slot[t]` of `finals` (the dataset format, version 2). The SAC collectors' replay
buffers use the same layout (with one more observation row), so one gather serves every stage.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mbml.data import Dataset


def device_data(ds: Dataset) -> dict:
    """The arrays every learner samples from, on the device, with a leading task axis.

    Arrays already of the learners' dtype go through `jax.device_put`, which on the CPU backend
    aliases a memory-mapped array instead of copying it (measured: a 2 GB memory-mapped float32
    array added 5 MB of resident memory through `device_put` and 4.1 GB through `jnp.asarray`), so
    a paper-size dataset is held once, by the page cache; on an accelerator it is copied there once.
    """
    def put(x, dtype=None):
        x = np.asarray(x)
        return jax.device_put(x if dtype is None or x.dtype == dtype else x.astype(dtype))

    return {"obs": put(ds.observations, np.float32), "actions": put(ds.actions, np.float32),
            "rewards": put(ds.rewards, np.float32), "terminals": put(ds.terminals, np.float32),
            "finals": put(ds.final_observations, np.float32), "final_slot": put(ds.final_slots())}


def next_obs(data_k: dict, idx):
    """Next observations of one task's transitions `idx` (any shape): [..., obs]."""
    slot = data_k["final_slot"][idx]
    following = data_k["obs"][jnp.minimum(idx + 1, data_k["obs"].shape[0] - 1)]
    final = data_k["finals"][jnp.maximum(slot, 0)]
    return jnp.where((slot >= 0)[..., None], final, following)


def gather(data_k: dict, idx) -> dict:
    """One task's transitions `idx` as a batch: obs, actions, rewards, next_obs, terminals (float32)."""
    return {"obs": data_k["obs"][idx], "actions": data_k["actions"][idx], "rewards": data_k["rewards"][idx],
            "next_obs": next_obs(data_k, idx), "terminals": data_k["terminals"][idx].astype(jnp.float32)}


def gather_n(buf_k: dict, idx, n: int, gamma: float, last) -> dict:
    """n-step transitions starting at `idx` of one task's replay buffer (with `timeouts`): rewards
    summed with discount over up to n steps of the same episode and no later than step `last`, the
    next observation and terminal flag of the last step summed, and `discount` = gamma^(steps summed)
    for the bootstrap. Off-policy n-step returns are not corrected for the policy having changed
    (as in DQN-style n-step SAC): the bias that buys faster propagation of rewards."""
    ret = jnp.zeros(idx.shape, jnp.float32)
    disc = jnp.ones(idx.shape, jnp.float32)
    alive = jnp.ones(idx.shape, bool)
    end = idx
    for j in range(n):
        i = jnp.minimum(idx + j, buf_k["rewards"].shape[0] - 1)
        ok = alive & (idx + j <= last)
        ret = ret + jnp.where(ok, disc * buf_k["rewards"][i], 0.0)
        disc = jnp.where(ok, disc * gamma, disc)
        end = jnp.where(ok, i, end)
        alive = ok & ~(buf_k["terminals"][i] | buf_k["timeouts"][i])
    return {"obs": buf_k["obs"][idx], "actions": buf_k["actions"][idx], "rewards": ret,
            "next_obs": next_obs(buf_k, end), "terminals": buf_k["terminals"][end].astype(jnp.float32),
            "discount": disc}


def take(data: dict, idx) -> dict:
    """Every task's transitions `idx` [K, ...] (per-task indices) as a batch [K, ..., ...]."""
    return jax.vmap(gather)(data, idx)


def sample(data_k: dict, key, n: int) -> dict:
    """n transitions of one task drawn uniformly, from the indices `data_k["rows"]` only where given."""
    rows = data_k.get("rows")
    idx = jax.random.randint(key, (n,), 0, data_k["obs"].shape[0] if rows is None else rows.shape[0])
    return gather(data_k, idx if rows is None else rows[idx])


def draw_indices(key, n: int, context_size: int, batch_size: int):
    """One task's context and RL-batch indices (baselines spec §1.4, §2.4: both baselines draw this way).

    The context is drawn uniformly with replacement from all n transitions. The RL batch is drawn
    uniformly with replacement from the transitions the context did not use. With u_0 < u_1 < ...
    the distinct used indices, u_j - j free indices lie below u_j. So the r-th free index is r plus
    the number of u_j with u_j - j <= r: O(C log C), not O(N). If the context used all n (n <= C),
    the batch is drawn from all n.
    """
    k_ctx, k_rl, k_all = jax.random.split(key, 3)
    c = context_size
    ctx = jax.random.randint(k_ctx, (c,), 0, n)
    s = jnp.sort(ctx)
    repeat = jnp.concatenate([jnp.zeros(1, bool), s[1:] == s[:-1]])
    used = jnp.sort(jnp.where(repeat, n, s))  # the distinct used indices, then repeats as n
    below = jnp.where(used < n, used - jnp.arange(c), n)  # free indices below each; non-decreasing
    free = n - (c - jnp.sum(repeat))
    r = jax.random.randint(k_rl, (batch_size,), 0, jnp.maximum(free, 1))
    rl = r + jnp.searchsorted(below, r, side="right")
    return ctx, jnp.where(free > 0, rl, jax.random.randint(k_all, (batch_size,), 0, n))


class _Rows:
    """Rows of drawn tasks of a [K, n, ...] array: `view[i]` is x[t, i]. Lets `transitions.gather`
    serve a meta-batch (tasks may repeat) with one gather per array, where `x[tasks]` would first copy
    each drawn task's whole dataset (measured: 1.4 GB a step at AntGoal's size)."""

    def __init__(self, x, tasks):
        self.x, self.t = x, tasks[:, None]

    @property
    def shape(self):
        return self.x.shape[1:]

    def __getitem__(self, i):
        return self.x[self.t, i]


def meta_take(data: dict, tasks, idx) -> dict:
    """Transitions idx [B, M] of tasks [B] (per drawn task) as a batch [B, M, ...]."""
    return gather({k: _Rows(v, tasks) for k, v in data.items()}, idx)
