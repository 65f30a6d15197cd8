"""Host-stepped environments: for families without a pure-JAX environment (the MuJoCo ones).

One gymnasium environment per task, stepped in lockstep on the host; policies and learners stay
jitted and lifted over the task axis. Episode noise is seeded from the run seed, so one seed gives
the same numbers whether or not a run was interrupted and resumed.

`TaskEnvs(..., threads=N)` steps the K environments on N threads (MuJoCo's `mj_step` releases the
GIL); results are bit-identical to sequential stepping. The default is sequential (1), or the
`MBML_ENV_THREADS` environment variable: on the 2-core development machine `benchmarks/envs.py`
measured no reliable gain from threads (the Python half of each env step still holds the GIL;
physics-heavy humanoid-dir is the best case for trying more on a machine with free cores).
"""

from __future__ import annotations

import functools
import os
import pickle
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from mbml import io, sac
from mbml.collect import CollectionLog, buffer_dataset, empty_buffer, grow_finals, run_collection, write_step
from mbml.config import SACConfig
from mbml.data import Dataset
from mbml.errors import MbmlError
from mbml.families import Family
from mbml.nets import lift
from mbml.train_loop import progress_file


def default_threads() -> int:
    """Threads `TaskEnvs` steps its envs on when not told: `MBML_ENV_THREADS`, else 1 (sequential)."""
    value = os.environ.get("MBML_ENV_THREADS", "1")
    try:
        n = int(value)
    except ValueError:
        raise MbmlError(f"MBML_ENV_THREADS must be a positive integer, got {value!r}") from None
    if n < 1:
        raise MbmlError(f"MBML_ENV_THREADS must be a positive integer, got {value!r}")
    return n


class TaskEnvs:
    """K environments, env i running task i.

    With `threads` > 1 the envs are split into that many contiguous groups, stepped concurrently
    (the calling thread takes the first group). Each env owns its model, data and RNG and every
    result is written to its env's slot, so the outcome never depends on thread timing.
    """

    def __init__(self, family: Family, tasks: np.ndarray, threads: int | None = None):
        self.family = family
        self.envs = [family.make_env(task=np.asarray(t, np.float64)) for t in tasks]
        n = default_threads() if threads is None else int(threads)
        if n < 1:
            raise MbmlError(f"threads must be a positive integer, got {threads!r}")
        self.threads = max(1, min(n, len(self.envs)))
        self._groups = [g.tolist() for g in np.array_split(np.arange(len(self.envs)), self.threads)]
        self._pool = (ThreadPoolExecutor(self.threads - 1, thread_name_prefix="mbml-env")
                      if self.threads > 1 else None)

    def __len__(self):
        return len(self.envs)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        """Stop the worker threads (if any) and close the envs."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        for env in self.envs:
            env.close()

    def _for_each(self, fn: Callable[[int], None], which=None) -> None:
        """fn(i) for every env index i (in `which` if given), on the thread groups."""
        keep = None if which is None else set(int(i) for i in which)
        groups = self._groups if keep is None else [[i for i in g if i in keep] for g in self._groups]

        def run(group):
            for i in group:
                fn(i)

        if self._pool is None:
            for g in groups:
                run(g)
            return
        futures = [self._pool.submit(run, g) for g in groups[1:] if g]
        try:
            run(groups[0])
        finally:  # wait for every group, even after an error, before anyone touches the envs again
            for f in futures:
                f.exception()
        for f in futures:
            f.result()

    def reset(self, seeds) -> np.ndarray:
        seeds = [int(s) for s in seeds]
        out: list = [None] * len(self.envs)

        def one(i):
            out[i] = self.envs[i].reset(seed=seeds[i])[0]

        self._for_each(one)
        return np.stack(out).astype(np.float32)

    def snapshot(self) -> list:
        """Every env's whole simulator state (its MjData, derived quantities and warm start
        included; pickle it at once, before the envs step on): `restore` continues bit-identically.
        Episodes are reseeded at each reset, so the envs' own RNGs need no saving. MuJoCo envs only
        (`env.unwrapped.data`)."""
        return [env.unwrapped.data for env in self.envs]

    def restore(self, states: list) -> None:
        import mujoco

        if len(states) != len(self.envs):
            raise MbmlError(f"snapshot of {len(states)} envs, not {len(self.envs)}")
        for env, data in zip(self.envs, states):
            mujoco.mj_copyData(env.unwrapped.data, env.unwrapped.model, data)

    def reset_one(self, i: int, seed: int) -> np.ndarray:
        return np.asarray(self.envs[i].reset(seed=int(seed))[0], np.float32)

    def step(self, actions: np.ndarray, active: np.ndarray | None = None):
        """Step every (active) env; inactive ones return zeros. -> obs, rewards, terminals, extras."""
        k = len(self.envs)
        active = np.ones(k, bool) if active is None else np.asarray(active, bool)
        obs = np.zeros((k, self.family.obs_dim), np.float32)
        rew, term = np.zeros(k, np.float32), np.zeros(k, bool)
        extras = {name: [None] * k for name in self.family.extras}

        def one(i):
            o, r, t, _, info = self.envs[i].step(actions[i])
            obs[i], rew[i], term[i] = o, r, t
            for name in self.family.extras:
                extras[name][i] = np.asarray(info[name], np.float32)

        self._for_each(one, np.flatnonzero(active) if not active.all() else None)
        for name, vals in extras.items():
            shape = next((np.shape(v) for v in vals if v is not None), ())
            extras[name] = np.stack([np.zeros(shape, np.float32) if v is None else v for v in vals])
        return obs, rew, term, extras


SNAPSHOT_EVERY = 600.0
"""Seconds between snapshots inside a collection chunk (`collect_host`): checkpoints come between
chunks of 10K steps, which take most of an hour for 30 walker tasks on 2 cores; a snapshot holds
the replay buffer, the learners and every env's simulator state, so a stop loses at most this
long and the resumed run is bit-identical."""


def _read_snapshot(path: Path | None, done: int, carry) -> dict | None:
    """The mid-chunk snapshot of the chunk starting at `done`, if there is one (others are stale:
    their chunk finished and was checkpointed). It is a pickle, unlike the msgpack checkpoints
    (MuJoCo's simulator state pickles whole, derived quantities included): resume only run folders
    you trust, as with any checkpoint that holds pickles."""
    if path is None or not path.exists():
        return None
    try:
        with open(path, "rb") as f:
            snap = pickle.load(f)
        same = (jax.tree.structure(snap["carry"]) == jax.tree.structure(carry)
                and np.shape(snap["carry"]["buf"]["obs"]) == np.shape(carry["buf"]["obs"]))
    except Exception as e:  # unreadable: the chunk checkpoint before it still holds
        raise MbmlError(f"corrupt collection snapshot {path} ({type(e).__name__}); delete it to resume from "
                        "the last checkpoint") from None
    if not same:
        raise MbmlError(f"collection snapshot {path} does not fit this run's learners or buffer; delete it to "
                        "resume from the last checkpoint")
    if snap["done"] != done:
        path.unlink()
        return None
    return snap


def _seeds(key, n: int) -> np.ndarray:
    return np.asarray(jax.random.randint(key, (n,), 0, 2**31 - 1))


# ------------------------------------------------------------------------------------- collection

@functools.partial(jax.jit, static_argnums=(0, 1))
def _act(cfg: SACConfig, act_dim: int, actors, obs, key, t):
    keys = jax.random.split(key, obs.shape[0])
    return jax.vmap(lambda p, o, k: sac.collect_action(cfg, p, o, k, act_dim, t))(actors, obs, keys)


_write = jax.jit(jax.vmap(write_step, in_axes=(0, None, 0, 0, 0)), donate_argnums=(0,))
"""Step t of every task (`collect.write_step` over the task axis), in place (the buffer is donated)."""


@functools.partial(jax.jit, static_argnums=(0, 1, 2), donate_argnums=(3, 7))
def _update(cfg: SACConfig, act_dim: int, lift_mode: str, states, buf, t, key, sums):
    """Every task's SAC step at env step t; `sums` (per metric, [K]) gains the step's metrics."""
    def one(state, b, k):
        k_idx, k_upd = jax.random.split(k)
        return sac.update(cfg, state, sac.replay_batch(cfg, b, k_idx, t), k_upd, act_dim)
    states, metrics = lift(one, lift_mode, (*cfg.policy_hidden, *cfg.q_hidden))(states, buf, jax.random.split(key, buf["rewards"].shape[0]))
    return states, {name: sums[name] + metrics[name] for name in sac.METRICS}


def collect_host(family: Family, cfg: SACConfig, key, lift_mode: str = "vmap", chunk: int | None = None,
                 ckpt: Path | None = None, progress: Callable[[int, int], None] | None = None,
                 threads: int | None = None, log: Callable[[int, dict], None] | None = None, tasks=None) -> Dataset:
    """SAC on every training task (or on `tasks` [K, P]) with host-stepped environments; the whole
    history is the dataset.

    Episodes still running at a chunk boundary are cut there (stored as time-limit truncations), so
    the data are the same whether or not the run was interrupted and resumed at a checkpoint. Inside
    a chunk a snapshot is written every `SNAPSHOT_EVERY` seconds (`<ckpt>.mid.pkl`), from which a
    stopped run continues bit-identically. `threads`: see `TaskEnvs` (the data do not depend on it).
    `log(step, {name: [K]})`: see `CollectionLog`, called at every progress point (each horizon of steps).
    """
    tasks = np.asarray(family.train_tasks if tasks is None else tasks)
    k, n, d, a, h = len(tasks), cfg.total_steps, family.obs_dim, family.act_dim, family.horizon
    chunk = chunk or max(h, (10_000 // h) * h)
    envs = TaskEnvs(family, tasks, threads)
    k_init, k_run = jax.random.split(key)
    states = jax.vmap(lambda kk: sac.init(cfg, kk, d, a))(jax.random.split(k_init, k))
    probe = envs.step(np.zeros((k, a), np.float32))[3]
    # room for the episode ends of time limits and chunk cuts; terminations double it when full
    finals = -(-n // h) + -(-n // chunk)
    buf = empty_buffer(k, n, d, a, finals, {name: jnp.zeros((k, n) + v.shape[1:]) for name, v in probe.items()})
    carry = {"sac": states, "buf": buf, "key": k_run}

    mid = None if ckpt is None else Path(ckpt).with_suffix(".mid.pkl")
    stats = CollectionLog(k, log)

    def advance(c, done, steps):
        rng = np.random.default_rng(_seeds(jax.random.fold_in(k_run, done), 1)[0])
        obs = envs.reset(rng.integers(2**31 - 1, size=k))
        ep = np.zeros(k, int)
        ep_return = np.zeros(k)
        states, b, key = c["sac"], c["buf"], c["key"]
        ends = np.array(b["ends"])
        start = done
        snap = _read_snapshot(mid, done, c)
        if snap is not None:  # this chunk was stopped part-way: continue from inside it
            carry = jax.tree.map(jnp.asarray, snap["carry"])
            states, b, key, start = carry["sac"], carry["buf"], carry["key"], snap["t"]
            rng.bit_generator.state, obs, ep, ends = snap["rng"], snap["obs"], snap["ep"], snap["ends"]
            ep_return = snap.get("ep_return", np.zeros(k))  # snapshots before collection logs lack it
            envs.restore(snap["envs"])
            del snap, carry  # host copies of the buffer
        last = time.monotonic()
        for t in range(start, done + steps):
            key, k_act, k_upd = jax.random.split(key, 3)
            actions = np.asarray(_act(cfg, a, states.actor, jnp.asarray(obs), k_act, t))
            nxt, rew, term, extras = envs.step(actions)
            ep += 1
            ep_return = ep_return + rew
            timeout = ((ep >= h) | (t == done + steps - 1)) & ~term
            end = term | timeout
            stats.episode_ends(end, ep_return)
            ep_return = np.where(end, 0.0, ep_return)
            # New arrays only: JAX may still read (alias) host arrays handed to the asynchronously
            # dispatched `_write`, so nothing given to it is written to afterwards.
            after = nxt.copy()
            for i in np.flatnonzero(end):
                after[i], ep[i] = envs.reset_one(i, rng.integers(2**31 - 1)), 0
            b = grow_finals(b, int(ends.max()) + 1)
            item = {"obs": obs, "actions": actions, "rewards": rew, "terminals": term, "timeouts": timeout,
                    "final_slot": np.where(end, ends, -1).astype(np.int32), **{f"extra_{m}": v for m, v in extras.items()}}
            b = _write(b, t, item, after, nxt)
            ends = ends + end
            if t >= cfg.warmup_steps:
                states, stats.sums = _update(cfg, a, lift_mode, states, b, jnp.asarray(t), k_upd, stats.sums)
                stats.updates += 1
            obs = after
            if t + 1 == done + steps or (t + 1) % h == 0:
                stats.flush(t + 1)
            if t + 1 == done + steps:
                break  # chunk ends: run_chunks checkpoints and reports
            if mid is not None and time.monotonic() - last >= SNAPSHOT_EVERY:
                snap = {"done": done, "t": t + 1, "carry": jax.device_get({"sac": states, "buf": b, "key": key}),
                        "rng": rng.bit_generator.state, "obs": obs, "ep": ep, "ep_return": ep_return, "ends": ends,
                        "envs": envs.snapshot()}
                io.atomic_write(mid, lambda f: pickle.dump(snap, f, protocol=5))
                io.write_json(progress_file(ckpt), {"done": t + 1, "total": n})  # where a stop resumes
                del snap
                last = time.monotonic()
            if progress is not None and (t + 1) % h == 0:
                progress(t + 1, n)
        return {"sac": states, "buf": b, "key": key}

    try:
        carry = run_collection(carry, n, chunk, advance, ckpt, progress)
    finally:
        envs.close()
    if mid is not None:
        mid.unlink(missing_ok=True)
    return buffer_dataset(jax.device_get(carry["buf"]), tasks, {"family": family.name, "source": "sac", "sac_steps": n})


# ------------------------------------------------------------------------------------- evaluation

def episodes(family: Family, envs: TaskEnvs, policy: Callable, key, seeds) -> tuple[np.ndarray, dict]:
    """One episode per env with `policy(obs[K], key) -> actions[K]`; returns [K] returns and transitions [K, H]."""
    k, h = len(envs), family.horizon
    obs = envs.reset(seeds)
    alive = np.ones(k, bool)
    tr = {"obs": [], "actions": [], "rewards": [], "next_obs": [], "valid": []}
    for _ in range(h):
        key, sub = jax.random.split(key)
        act = np.asarray(policy(jnp.asarray(obs), sub))
        nxt, rew, term, _ = envs.step(act, alive)
        for name, v in zip(tr, (obs, act, rew * alive, nxt, alive.copy())):
            tr[name].append(v)
        alive &= ~term
        obs = np.where(alive[:, None], nxt, obs)
        if not alive.any():
            break
    tr = {name: np.stack(v, 1) for name, v in tr.items()}
    return tr["rewards"].sum(1), tr


def mean_returns(family: Family, tasks: np.ndarray, policy: Callable, key, n: int,
                 threads: int | None = None) -> np.ndarray:
    """Mean return of n episodes of `policy` on each task: [T]."""
    out = []
    with TaskEnvs(family, tasks, threads) as envs:
        for i in range(n):
            k1, k2 = jax.random.split(jax.random.fold_in(key, i))
            out.append(episodes(family, envs, policy, k1, _seeds(k2, len(tasks)))[0])
    return np.mean(out, axis=0)
