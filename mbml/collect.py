"""Stage `collect`: SAC on every training task, keeping the whole replay history (spec §2).

All K tasks train in one jitted program: the per-task step is lifted over the task axis and
`lax.scan` runs a chunk of environment steps per call, so progress bars and resumable checkpoints
sit between chunks. Each task's dataset is its own agent's learning history in collection order.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from mbml import sac
from mbml.config import SACConfig
from mbml.data import Dataset, final_table
from mbml.errors import MbmlError
from mbml.families import Family
from mbml.nets import lift
from mbml.train_loop import run_chunks


# ---------------------------------------------------------------------- replay buffers (both collectors)

def empty_buffer(k: int, n: int, obs_dim: int, act_dim: int, finals: int, extras: dict | None = None) -> dict:
    """K tasks' replay buffers for n steps, laid out as `transitions.device_data` with one more
    observation row: row t + 1 of `obs` is the observation after step t (the next one, or the reset
    after an episode end), and the next observations of episode ends go to `finals` (room for
    `finals` of them, grown by `grow_finals`) at row `final_slot[t]`; `ends` counts them."""
    return {"obs": jnp.zeros((k, n + 1, obs_dim)), "actions": jnp.zeros((k, n, act_dim)), "rewards": jnp.zeros((k, n)),
            "terminals": jnp.zeros((k, n), bool), "timeouts": jnp.zeros((k, n), bool),
            "final_slot": jnp.full((k, n), -1, jnp.int32), "finals": jnp.zeros((k, finals, obs_dim)),
            "ends": jnp.zeros(k, jnp.int32), **{f"extra_{name}": v for name, v in (extras or {}).items()}}


def grow_finals(buf: dict, need: int) -> dict:
    """The buffer with room for `need` episode ends per task (at least doubled when it grows)."""
    k, cap, d = buf["finals"].shape
    if need <= cap:
        return buf
    more = jnp.zeros((k, max(need, 2 * cap) - cap, d), buf["finals"].dtype)
    return {**buf, "finals": jnp.concatenate([buf["finals"], more], 1)}


def write_step(buf: dict, t, item: dict, obs_after, next_obs) -> dict:
    """One task's buffer with step t written: `item` (a value of each per-step array), the observation
    after it (row t + 1: the next one, or the reset after an episode end) and, if the episode ended
    (`item["final_slot"]` >= 0), its true next observation as that row of `finals`."""
    slot = item["final_slot"]
    out = {**buf, **{name: buf[name].at[t].set(v) for name, v in item.items()}}
    return {**out, "obs": out["obs"].at[t + 1].set(obs_after),
            "finals": buf["finals"].at[jnp.where(slot >= 0, slot, buf["finals"].shape[0])].set(next_obs, mode="drop"),
            "ends": buf["ends"] + (slot >= 0)}


def buffer_dataset(buf: dict, tasks: np.ndarray, meta: dict) -> Dataset:
    """The dataset of full replay buffers (host arrays)."""
    n = buf["rewards"].shape[1]
    ends = buf["terminals"] | buf["timeouts"]
    extras = {name[6:]: v for name, v in buf.items() if name.startswith("extra_")}
    return Dataset(observations=buf["obs"][:, :n], actions=buf["actions"], rewards=buf["rewards"],
                   final_observations=final_table(buf["obs"], buf["finals"], ends), terminals=buf["terminals"],
                   timeouts=buf["timeouts"], tasks=np.asarray(tasks), extras=extras, meta=meta)


def run_collection(carry, total: int, chunk: int, advance: Callable, ckpt: Path | None,
                   progress: Callable[[int, int], None] | None):
    """`run_chunks`, with a one-line error for a checkpoint of the collection before next
    observations were derived (its buffer does not fit the current one and cannot be resumed)."""
    try:
        return run_chunks(carry, total, chunk, advance, ckpt, progress)
    except MbmlError as e:
        if ckpt is None or not str(e).startswith("corrupt checkpoint") or not _stores_next_observations(ckpt):
            raise
        raise MbmlError(f"{ckpt} was written by an older mbml (its replay buffer stores next observations) and "
                        "cannot be resumed; delete it to collect again from the start") from None


def _stores_next_observations(ckpt: Path) -> bool:
    try:
        return "next_observations" in serialization.msgpack_restore(Path(ckpt).read_bytes())["carry"]["buf"]
    except Exception:  # unreadable for another reason: the original error stands
        return False


class CollectionLog:
    """What a collection reports between progress points: each task's mean SAC metrics over the
    updates since the last report and the mean return of the episodes that ended since then (NaN
    where none did). `write(step, rows)` receives {name: [K] values}."""

    def __init__(self, k: int, write: Callable[[int, dict], None] | None):
        self.k, self.write = k, write
        self.reset()

    def reset(self):
        self.sums = {name: jnp.zeros(self.k) for name in sac.METRICS}
        self.updates = 0
        self.returns = np.zeros(self.k)
        self.episodes = np.zeros(self.k, int)

    def episode_ends(self, ended: np.ndarray, returns: np.ndarray) -> None:
        self.returns += np.where(ended, returns, 0.0)
        self.episodes += ended

    def flush(self, step: int) -> None:
        if self.write is not None and (self.updates or self.episodes.any()):
            sums = jax.device_get(self.sums)
            rows = {name: sums[name] / self.updates if self.updates else np.full(self.k, np.nan)
                    for name in sac.METRICS}
            with np.errstate(invalid="ignore"):
                rows["episode_return"] = np.where(self.episodes > 0, self.returns / np.maximum(self.episodes, 1), np.nan)
            rows["episodes"] = self.episodes.copy()
            self.write(step, rows)
        self.reset()


# ---------------------------------------------------------------------- jitted collection (pure-JAX envs)

def _init_carry(family: Family, cfg: SACConfig, tasks, key):
    def one(task, k):
        k_sac, k_env, k_run = jax.random.split(k, 3)
        env_state, obs = family.jax_env.reset(k_env, task)
        return {"sac": sac.init(cfg, k_sac, family.obs_dim, family.act_dim), "env": env_state, "obs": obs,
                "ep_step": jnp.zeros((), jnp.int32), "key": k_run}

    carry = jax.vmap(one)(tasks, jax.random.split(key, len(tasks)))
    buf = empty_buffer(len(tasks), cfg.total_steps, family.obs_dim, family.act_dim, 0)
    return {**carry, "buf": {**buf, "obs": buf["obs"].at[:, 0].set(carry["obs"])}}


def _step_one(family: Family, cfg: SACConfig, carry, task, t):
    env, a_dim, horizon = family.jax_env, family.act_dim, family.horizon
    key, k_act, k_reset, k_idx, k_upd = jax.random.split(carry["key"], 5)
    action = sac.collect_action(cfg, carry["sac"].actor, carry["obs"], k_act, a_dim, t)
    env_state, next_obs, reward, terminal = env.step(carry["env"], action, task)
    timeout = (carry["ep_step"] + 1 >= horizon) & ~terminal
    reset_state, reset_obs = env.reset(k_reset, task)
    done = terminal | timeout
    env_state = jax.tree.map(lambda r, s: jnp.where(done, r, s), reset_state, env_state)
    obs = jnp.where(done, reset_obs, next_obs)
    item = {"actions": action, "rewards": reward, "terminals": terminal, "timeouts": timeout,
            "final_slot": jnp.where(done, carry["buf"]["ends"], -1)}
    buf = write_step(carry["buf"], t, item, obs, next_obs)

    def learn(state):
        return sac.update(cfg, state, sac.replay_batch(cfg, buf, k_idx, t), k_upd, a_dim)[0]

    state = jax.lax.cond(t >= cfg.warmup_steps, learn, lambda s: s, carry["sac"])
    return {"sac": state, "env": env_state, "obs": obs, "ep_step": jnp.where(done, 0, carry["ep_step"] + 1),
            "buf": buf, "key": key}


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3), donate_argnums=(4,))
def _chunk(family: Family, cfg: SACConfig, lift_mode: str, length: int, carry, tasks, start):
    def body(c, t):
        return lift(lambda ci, task: _step_one(family, cfg, ci, task, t), lift_mode,
                       (*cfg.policy_hidden, *cfg.q_hidden))(c, tasks), None

    carry, _ = jax.lax.scan(body, carry, start + jnp.arange(length))
    return carry


def collect(family: Family, cfg: SACConfig, key, lift_mode: str = "vmap", chunk: int = 1000,
            ckpt: Path | None = None, progress: Callable[[int, int], None] | None = None, tasks=None) -> Dataset:
    """Run SAC on every training task (or on `tasks` [K, P]) for `cfg.total_steps` steps; return the whole history."""
    if family.jax_env is None:
        raise MbmlError(f"family {family.name!r} has no pure-JAX environment; host-stepped collection "
                        "is not implemented yet")
    tasks = np.asarray(family.train_tasks if tasks is None else tasks)
    given, tasks = tasks, jnp.asarray(tasks, jnp.float32)
    carry = _init_carry(family, cfg, tasks, key)
    total = cfg.total_steps
    # The table of episode ends' next observations has room for a chunk's worst case (every step
    # ends an episode) before each chunk runs, so no family has to say whether it can terminate.
    # Sized from the time limit plus one chunk, it never grows without terminations (point-nav:
    # N / 20 + 1000 rows instead of N); with them it doubles, recompiling the chunk, when needed.
    carry["buf"] = grow_finals(carry["buf"], min(-(-total // family.horizon) + chunk, total))

    def advance(c, done, n):
        c = {**c, "buf": grow_finals(c["buf"], min(int(np.max(c["buf"]["ends"])) + n, total))}
        return _chunk(family, cfg, lift_mode, n, c, tasks, jnp.asarray(done))

    carry = run_collection(carry, total, chunk, advance, ckpt, progress)
    return buffer_dataset(jax.device_get(carry["buf"]), given,
                          {"family": family.name, "source": "sac", "sac_steps": total})


def episode_returns(ds: Dataset) -> np.ndarray:
    """Undiscounted return of each complete episode, per task: [K, episodes] (equal-length episodes)."""
    ends = np.asarray(ds.terminals) | np.asarray(ds.timeouts)
    out = []
    for t in range(ds.num_tasks):
        cut = np.flatnonzero(ends[t]) + 1
        out.append([seg.sum() for seg in np.split(np.asarray(ds.rewards[t]), cut)[:len(cut)]])
    n = min(len(r) for r in out)
    return np.array([r[:n] for r in out])
