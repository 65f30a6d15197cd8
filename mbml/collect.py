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

from mbml import sac
from mbml.config import SACConfig
from mbml.data import Dataset
from mbml.errors import MbmlError
from mbml.families import Family
from mbml.nets import lift
from mbml.train_loop import run_chunks


def _init_carry(family: Family, cfg: SACConfig, tasks, key):
    def one(task, k):
        k_sac, k_env, k_run = jax.random.split(k, 3)
        env_state, obs = family.jax_env.reset(k_env, task)
        n, d, a = cfg.total_steps, family.obs_dim, family.act_dim
        buf = {"observations": jnp.zeros((n, d)), "actions": jnp.zeros((n, a)), "rewards": jnp.zeros(n),
               "next_observations": jnp.zeros((n, d)), "terminals": jnp.zeros(n, bool),
               "timeouts": jnp.zeros(n, bool)}
        return {"sac": sac.init(cfg, k_sac, d, a), "env": env_state, "obs": obs,
                "ep_step": jnp.zeros((), jnp.int32), "buf": buf, "key": k_run}

    return jax.vmap(one)(tasks, jax.random.split(key, len(tasks)))


def _step_one(family: Family, cfg: SACConfig, carry, task, t):
    env, a_dim, horizon = family.jax_env, family.act_dim, family.horizon
    key, k_act, k_reset, k_idx, k_upd = jax.random.split(carry["key"], 5)
    action, _ = sac.sample_action(cfg, carry["sac"].actor, carry["obs"], k_act, a_dim)
    env_state, next_obs, reward, terminal = env.step(carry["env"], action, task)
    timeout = (carry["ep_step"] + 1 >= horizon) & ~terminal
    item = {"observations": carry["obs"], "actions": action, "rewards": reward,
            "next_observations": next_obs, "terminals": terminal, "timeouts": timeout}
    buf = jax.tree.map(lambda b, v: b.at[t].set(v), carry["buf"], item)
    reset_state, reset_obs = env.reset(k_reset, task)
    done = terminal | timeout
    env_state = jax.tree.map(lambda r, s: jnp.where(done, r, s), reset_state, env_state)
    obs = jnp.where(done, reset_obs, next_obs)

    def learn(state):
        idx = jax.random.randint(k_idx, (cfg.batch_size,), 0, t + 1)
        b = {"obs": buf["observations"][idx], "actions": buf["actions"][idx], "rewards": buf["rewards"][idx],
             "next_obs": buf["next_observations"][idx], "terminals": buf["terminals"][idx].astype(jnp.float32)}
        return sac.update(cfg, state, b, k_upd, a_dim)[0]

    state = jax.lax.cond(t >= cfg.warmup_steps, learn, lambda s: s, carry["sac"])
    return {"sac": state, "env": env_state, "obs": obs, "ep_step": jnp.where(done, 0, carry["ep_step"] + 1),
            "buf": buf, "key": key}


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3), donate_argnums=(4,))
def _chunk(family: Family, cfg: SACConfig, lift_mode: str, length: int, carry, tasks, start):
    def body(c, t):
        return lift(lambda ci, task: _step_one(family, cfg, ci, task, t), lift_mode)(c, tasks), None

    carry, _ = jax.lax.scan(body, carry, start + jnp.arange(length))
    return carry


def collect(family: Family, cfg: SACConfig, key, lift_mode: str = "vmap", chunk: int = 1000,
            ckpt: Path | None = None, progress: Callable[[int, int], None] | None = None) -> Dataset:
    """Run SAC on every training task for `cfg.total_steps` steps; return the whole history."""
    if family.jax_env is None:
        raise MbmlError(f"family {family.name!r} has no pure-JAX environment; host-stepped collection "
                        "is not implemented yet")
    tasks = jnp.asarray(family.train_tasks, jnp.float32)
    carry = _init_carry(family, cfg, tasks, key)
    total = cfg.total_steps

    def advance(c, done, n):
        return _chunk(family, cfg, lift_mode, n, c, tasks, jnp.asarray(done))

    carry = run_chunks(carry, total, chunk, advance, ckpt, progress)
    buf = jax.device_get(carry["buf"])
    return Dataset(**{k: np.asarray(v) for k, v in buf.items()}, tasks=np.asarray(family.train_tasks),
                   meta={"family": family.name, "source": "sac", "sac_steps": total})


def episode_returns(ds: Dataset) -> np.ndarray:
    """Undiscounted return of each complete episode, per task: [K, episodes] (equal-length episodes)."""
    ends = np.asarray(ds.terminals) | np.asarray(ds.timeouts)
    out = []
    for t in range(ds.num_tasks):
        cut = np.flatnonzero(ends[t]) + 1
        out.append([seg.sum() for seg in np.split(np.asarray(ds.rewards[t]), cut)[:len(cut)]])
    n = min(len(r) for r in out)
    return np.array([r[:n] for r in out])
