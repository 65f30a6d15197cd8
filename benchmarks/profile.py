"""Where the `cpu` preset's time goes, stage by stage, for one MuJoCo family (not a test).

    python benchmarks/profile.py [--family ant-dir] [--out docs/profile.md]
    python benchmarks/profile.py --quick        # every code path, tiny windows (minutes: compilation)

Each stage's pieces are built from the module's own functions (`hostenv._act`, `_write`,
`_update`, `collect_host`, `teachers._chunk`, `ensembles._chunk` and `relabel`, `distill._chunk`,
`hostenv.mean_returns` and the student protocol) on random data of the preset's shapes (30K
transitions per task for ant-dir), and timed in short windows: best of 3 after a warm-up call
(compilation excluded), except where a row says otherwise. Per row: seconds per unit of work, the
number of such units the preset's budget asks for (`mbml.config.preset(family, "cpu")`) and their
product, the projected stage time; for each jitted update, the GFLOP/s it reached (XLA's cost
analysis of one step over the measured time) beside the fp32 matmul peak measured in the same run.

One env step of the K-task collection is split into: physics (bare `mujoco.mj_step(model, data,
nstep=frame_skip)` on each env's own model and data, replaying the same actions from the same
state), the rest of the gymnasium `env.step` in Python, `TaskEnvs.step`'s own bookkeeping, the
jitted `_act` and `_write` with their dispatch, and the SAC `_update` of all K tasks (lifted with
`vmap`, the default, and `lax.map`). `collect_host` itself then runs on the same shapes (the
jitted functions are already compiled) and is stopped after a few horizons of steps, the first two
before learning starts: its per-step time there minus the parts is the rest of its loop (resets,
numpy bookkeeping), and its per-step time with learning minus that is the `_update` as the loop
runs it (beside `_update` timed alone, with both lifts), so the rows add up to the measured
end-to-end time.

Not profiled: the references stage, the evaluate stage's inference diagnostic, checkpoint writes,
and for families whose tasks differ in dynamics (walker-param) the next-state ensembles.

`--out FILE` writes the table as markdown with the date, the command, the machine and a summary of
the numbers; text below the line `<!-- notes -->` of an existing FILE is kept (hand-written notes).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import fake_data, flops_of, matmul_peak, timed  # noqa: E402

from mbml import bcq, hostenv, sac, student as S  # noqa: E402
from mbml.collect import empty_buffer  # noqa: E402
from mbml.config import METHODS, preset  # noqa: E402
from mbml.data import Dataset  # noqa: E402
from mbml.distill import _chunk as distill_chunk, agent as student_agent, loss_fn, optimizer  # noqa: E402
from mbml.evaluate import protocol  # noqa: E402
from mbml.ensembles import (ACTIVATION_BUDGET, _chunk as ensemble_chunk, _mean_std, init_members,  # noqa: E402
                            relabel, reward_target)
from mbml.families import get_family  # noqa: E402
from mbml.families.mujoco.base import rescale_action  # noqa: E402
from mbml.hostenv import TaskEnvs  # noqa: E402
from mbml.teachers import _act_batch, _chunk as teacher_chunk  # noqa: E402

NOTES_MARK = "<!-- notes -->"
METHODS_RUN = ("full", "neither")  # what `mbml run` trains by default


@dataclass(frozen=True)
class Sizes:
    """Measurement windows (units of work per timed call)."""

    env_steps: int = 200  # K-task env steps per timed window (physics / env.step / TaskEnvs.step)
    act_steps: int = 200  # _act and _write calls per window
    updates: int = 30  # SAC _update calls per window
    e2e_horizons: int = 5  # collect_host horizons run: 2 without updates (see collect_end_to_end), the rest with
    teacher_steps: int = 30
    ensemble_steps: int = 100
    relabel_chunks: int = 1  # row chunks per task in the timed relabelling pass
    distill_steps: int = 30
    eval_episodes: int | None = None  # None: the preset's


FULL = Sizes()
QUICK = Sizes(env_steps=10, act_steps=10, updates=2, e2e_horizons=3, teacher_steps=2, ensemble_steps=2,
              relabel_chunks=0, distill_steps=2, eval_episodes=1)


@dataclass
class Row:
    stage: str
    part: str
    unit: str
    seconds: float  # per unit
    count: float  # units at the preset's budget
    flops: float | None = None  # per unit (jitted updates)
    kind: str = "part"  # part: adds to the stage total; alt: shown, not added; total: the stage's measured total
    note: str = ""
    short: str = ""  # name in the summary (default: part)

    @property
    def projected(self) -> float:
        return self.seconds * self.count


# ------------------------------------------------------------------------------------ collection

class CountingEnvs(TaskEnvs):
    """TaskEnvs that counts its (K-task) steps."""

    steps = 0

    def step(self, actions, active=None):
        self.steps += 1
        return super().step(actions, active)


def snapshot(envs: TaskEnvs) -> list:
    out = []
    for env in envs.envs:
        u = env.unwrapped
        d = mujoco.MjData(u.model)
        mujoco.mj_copyData(d, u.model, u.data)
        out.append(d)
    return out


def restore(envs: TaskEnvs, states: list) -> None:
    for env, d in zip(envs.envs, states):
        mujoco.mj_copyData(env.unwrapped.data, env.unwrapped.model, d)


def env_split(envs: TaskEnvs, actions: np.ndarray, rounds: int = 5) -> dict:
    """Seconds per K-task env step of TaskEnvs.step, of the K gymnasium env.step calls alone, and of
    bare physics (mj_step x frame_skip on each env's model and data), each replaying `actions`
    [n, K, act] from the same simulator state: median of `rounds` alternating rounds."""
    start = snapshot(envs)
    ctrl = [[rescale_action(a, e.unwrapped.ctrl_low, e.unwrapped.ctrl_high) for e, a in zip(envs.envs, step)]
            for step in actions]
    n = len(actions)

    def task_envs():
        restore(envs, start)
        for a in actions:
            envs.step(a)

    def gym_steps():
        restore(envs, start)
        for a in actions:
            for env, ai in zip(envs.envs, a):
                env.step(ai)

    def physics():
        restore(envs, start)
        for c in ctrl:
            for env, ci in zip(envs.envs, c):
                u = env.unwrapped
                u.data.ctrl[:] = ci
                mujoco.mj_step(u.model, u.data, nstep=u.frame_skip)

    fns = {"task_envs": task_envs, "gym": gym_steps, "physics": physics}
    times = {name: [] for name in fns}
    for _ in range(rounds):  # alternating, so that a change of load hits all three alike
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(v) / n for name, v in times.items()}


def collect_shapes(fam, cfg, k: int, extras: dict):
    """SAC states, a replay buffer filled with random transitions, and the metric sums, shaped as
    `collect_host` makes them."""
    n, d, a, h = cfg.total_steps, fam.obs_dim, fam.act_dim, fam.horizon
    chunk = max(h, (10_000 // h) * h)
    finals = -(-n // h) + -(-n // chunk)
    states = jax.vmap(lambda kk: sac.init(cfg, kk, d, a))(jax.random.split(jax.random.PRNGKey(0), k))
    buf = empty_buffer(k, n, d, a, finals, {name: jnp.zeros((k, n) + v.shape[1:]) for name, v in extras.items()})
    ks = jax.random.split(jax.random.PRNGKey(1), 3)
    buf = {**buf, "obs": jax.random.normal(ks[0], buf["obs"].shape),
           "actions": jax.random.uniform(ks[1], buf["actions"].shape, minval=-1, maxval=1),
           "rewards": jax.random.normal(ks[2], buf["rewards"].shape)}
    sums = {name: jnp.zeros(k) for name in sac.METRICS}
    return states, buf, sums


def act_and_write(cfg, a: int, states, box: dict, obs: np.ndarray, extras: dict, n: int) -> tuple[float, float]:
    """Seconds per call of the loop's key split + `_act` (obs to the device, actions back) and of
    `_write` (the step's transition into the donated buffer, `box["buf"]`), as collect_host calls them."""
    k = obs.shape[0]
    key = jax.random.PRNGKey(2)
    act = np.zeros((k, a), np.float32)
    item = {"obs": obs, "actions": act, "rewards": np.zeros(k, np.float32), "terminals": np.zeros(k, bool),
            "timeouts": np.zeros(k, bool), "final_slot": np.full(k, -1, np.int32),
            **{f"extra_{m}": np.asarray(v, np.float32) for m, v in extras.items()}}

    def acts():
        nonlocal key
        for t in range(n):
            key, k_act, _ = jax.random.split(key, 3)
            np.asarray(hostenv._act(cfg, a, states.actor, jnp.asarray(obs), k_act, t))

    def writes():
        for t in range(n):
            box["buf"] = hostenv._write(box["buf"], t, item, obs.copy(), obs.copy())
        return box["buf"]

    return timed(acts) / n, timed(writes) / n


def sac_update(cfg, a: int, mode: str, states, buf, sums, n: int) -> tuple[float, float, float]:
    """Seconds per `_update` call (all K tasks' SAC step) with lift `mode`: waiting for each call
    before the next, as the collection loop does (its next `_act` needs the updated actor); with
    the calls queued back to back; and the median time until a call returns (its dispatch)."""
    box = {"s": jax.tree.map(jnp.copy, states), "m": jax.tree.map(jnp.copy, sums), "key": jax.random.PRNGKey(3)}
    t = jnp.asarray(cfg.total_steps // 2)
    dispatch = []

    def updates(wait: bool):
        for _ in range(n):
            box["key"], sub = jax.random.split(box["key"])
            jax.block_until_ready(sub)
            start = time.perf_counter()
            box["s"], box["m"] = hostenv._update(cfg, a, mode, box["s"], buf, t, sub, box["m"])
            dispatch.append(time.perf_counter() - start)
            if wait:
                jax.block_until_ready(box["m"])
        return box["s"], box["m"]

    waited = timed(updates, True) / n
    queued = timed(updates, False) / n
    return waited, queued, statistics.median(dispatch[n:])  # without the warm-up call's


class _Stop(Exception):
    pass


def collect_end_to_end(fam, cfg, mode: str, horizons: int) -> tuple[float, float]:
    """`collect_host` stopped after `horizons` horizons of steps, the first two without updates
    (cfg.warmup_steps = two horizons; the first also compiles the host-side seeding): seconds per
    K-task env step of the second horizon, and the best of those with the SAC update."""
    stamps = []

    def progress(done, total):
        stamps.append(time.perf_counter())
        if done >= horizons * fam.horizon:
            raise _Stop

    try:
        hostenv.collect_host(fam, cfg, jax.random.PRNGKey(4), mode, progress=progress)
    except _Stop:
        pass
    seg = np.diff(stamps) / fam.horizon  # stamps: before step 0, then after each horizon
    return float(seg[1]), float(min(seg[2:]))


def profile_collection(fam, cfg, sizes: Sizes) -> list[Row]:
    k, a, h = len(fam.train_tasks), fam.act_dim, fam.horizon
    # warmup_steps = two horizons for the end-to-end run; it changes nothing in the jitted code
    # but is part of the (static) config, so the pieces use the same config and share its compilations
    prof = dataclasses.replace(cfg.sac, warmup_steps=2 * h)
    n, n_upd = cfg.sac.total_steps, cfg.sac.total_steps - cfg.sac.warmup_steps
    stage, unit, gunit = "collection", f"env step ({k} tasks)", "gradient step (K tasks)"
    rng = np.random.default_rng(0)
    with TaskEnvs(fam, fam.train_tasks) as envs:
        obs = envs.reset(range(k))
        for _ in range(20):  # off the initial state
            obs, _, _, extras = envs.step(rng.uniform(-1, 1, (k, a)).astype(np.float32))
        split = env_split(envs, rng.uniform(-1, 1, (sizes.env_steps, k, a)).astype(np.float32))
    states, buf, sums = collect_shapes(fam, prof, k, extras)
    box = {"buf": buf}
    t_act, t_write = act_and_write(prof, a, states, box, obs, extras, sizes.act_steps)
    buf = box["buf"]
    t_upd = {m: sac_update(prof, a, m, states, buf, sums, sizes.updates) for m in ("vmap", "map")}
    f_upd = flops_of(lambda s, b, t, kk, m: hostenv._update(prof, a, "vmap", s, b, t, kk, m),
                     states, buf, jnp.asarray(n // 2), jax.random.PRNGKey(0), sums)
    del buf, box
    warm, learn = collect_end_to_end(fam, prof, cfg.lift, sizes.e2e_horizons)
    parts = split["task_envs"] + t_act + t_write  # the rows above the update
    rows = [
        Row(stage, "physics: `mj_step` x frame skip, K envs", unit, split["physics"], n, short="physics"),
        Row(stage, "gymnasium `env.step` beyond physics (Python)", unit, split["gym"] - split["physics"], n,
            short="env Python"),
        Row(stage, "`TaskEnvs.step` bookkeeping (stacking obs, extras)", unit, split["task_envs"] - split["gym"], n,
            short="`TaskEnvs` bookkeeping"),
        Row(stage, "`_act` + dispatch (key split, obs to device, actions back)", unit, t_act, n, short="`_act`"),
        Row(stage, "`_write` + dispatch (one step into the donated buffer)", unit, t_write, n, short="`_write`"),
        Row(stage, "rest of the `collect_host` loop (resets, numpy; before learning: end to end minus the rows above)",
            unit, warm - parts, n, short="rest of the loop"),
        Row(stage, f"`_update` inside `collect_host`, lift={cfg.lift} (end to end with minus without learning)",
            gunit, learn - warm, n_upd, f_upd, short="`_update` in the loop"),
        *(Row(stage, f"`_update` alone, lift={m}: SAC step of all K tasks", gunit, t_upd[m][0], n_upd, f_upd, "alt",
              f"waiting for each call (as the loop does); queued back to back {1e3 * t_upd[m][1]:.1f} ms; "
              f"dispatch (until the call returns) {1e3 * t_upd[m][2]:.2f} ms"
              + ("; flops of the vmap program (the same maths)" if m == "map" else ""))
          for m in ("vmap", "map")),
        Row(stage, f"`collect_host` end to end, lift={cfg.lift}", unit,
            (warm * cfg.sac.warmup_steps + learn * n_upd) / n, n, kind="total",
            note=f"measured {1e3 * warm:.1f} ms/step before learning starts, {1e3 * learn:.1f} with the update"),
    ]
    return rows


# ------------------------------------------------------------------------------------ evaluations

def make_envs_time(fam, tasks) -> float:
    """Seconds to build and close the TaskEnvs of an evaluation (median of 3)."""
    out = []
    for _ in range(3):
        t = time.perf_counter()
        TaskEnvs(fam, tasks).close()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def teacher_round(fam, cfg, teachers, episodes: int) -> tuple[float, int]:
    """One online evaluation round (`hostenv.mean_returns` with the teachers' batched policy, as
    `teachers.evaluate_own_tasks` calls it), timed once after compiling the policy: (seconds, K-task
    env steps it took)."""
    calls = [0]

    def policy(obs, key):
        calls[0] += 1
        return _act_batch(cfg.bcq, fam.act_dim, teachers, obs, key)

    k = len(fam.train_tasks)
    jax.block_until_ready(policy(jnp.zeros((k, fam.obs_dim)), jax.random.PRNGKey(0)))
    calls[0] = 0
    t = time.perf_counter()
    hostenv.mean_returns(fam, np.asarray(fam.train_tasks), policy, jax.random.PRNGKey(5), episodes)
    return time.perf_counter() - t, calls[0]


def student_protocol(fam, cfg, ev, params, tasks) -> tuple[float, int]:
    """The evaluation protocol (`evaluate.protocol` on TaskEnvs that count their
    steps), run twice with the same key so that the second run's shapes (contexts of the episodes so
    far) are compiled: (seconds of the second run, K-task env steps it took). Env construction is
    timed apart."""
    tasks = np.asarray(tasks)
    out = []
    for _ in range(2):
        with CountingEnvs(fam, tasks) as envs:
            t = time.perf_counter()
            protocol(fam, student_agent(cfg, fam.act_dim), params, tasks, jax.random.PRNGKey(6), ev, envs=envs)
            out.append((time.perf_counter() - t, envs.steps))
    return out[1]


# ------------------------------------------------------------------------------------ learners

def init_teachers(cfg, k, d, a):
    return jax.vmap(lambda kk: bcq.init(cfg.bcq, kk, d, a))(jax.random.split(jax.random.PRNGKey(7), k))


def profile_teachers(fam, cfg, data, teachers, sizes: Sizes, evals: dict) -> list[Row]:
    k, a, h, b = len(fam.train_tasks), fam.act_dim, fam.horizon, cfg.bcq
    L = sizes.teacher_steps

    def fresh():  # a new carry per call: _chunk donates it
        return {"teacher": jax.tree.map(jnp.copy, teachers), "key": jax.random.split(jax.random.PRNGKey(8), k)}

    t_step = timed(lambda: teacher_chunk(b, a, cfg.lift, L, fresh(), data)) / L
    f_step = flops_of(lambda c: teacher_chunk(b, a, cfg.lift, 1, c, data), fresh())
    episodes = sizes.eval_episodes or b.eval_episodes
    t_round, steps = teacher_round(fam, cfg, teachers, episodes)
    make = evals["make_train"]
    per_step = (t_round - make) / steps
    rounds = -(-b.steps // b.eval_every)
    round_full = make + b.eval_episodes * h * per_step
    return [
        Row("teachers", f"BCQ `_chunk`, lift={cfg.lift}", "gradient step (K tasks)", t_step, b.steps, f_step,
            short="BCQ teachers"),
        Row("teachers", f"online evaluation: {b.eval_episodes} episodes on K tasks (`mean_returns`)", "round",
            round_full, rounds,
            note=f"{1e3 * per_step:.1f} ms per K-task env step incl. the policy; measured round of {episodes} "
                 f"episodes: {t_round:.1f} s, {steps} steps ({steps / episodes:.0f} per episode, untrained teachers); "
                 f"projected at {h} steps per episode, {make:.2f} s to make the envs"),
    ]


def relabel_dataset(fam, n: int, extras: dict, key) -> Dataset:
    """A random Dataset of n transitions per task (for `relabel`)."""
    k, d, a = len(fam.train_tasks), fam.obs_dim, fam.act_dim
    rng = np.random.default_rng(int(key))
    term = np.zeros((k, n), bool)
    return Dataset(observations=rng.standard_normal((k, n, d), np.float32),
                   actions=rng.uniform(-1, 1, (k, n, a)).astype(np.float32),
                   rewards=rng.standard_normal((k, n), np.float32),
                   final_observations=rng.standard_normal((k, 1, d), np.float32), terminals=term, timeouts=term.copy(),
                   tasks=np.asarray(fam.train_tasks),
                   extras={m: rng.standard_normal((k, n) + v.shape[1:], np.float32) for m, v in extras.items()})


def profile_ensembles(fam, cfg, data, extras: dict, sizes: Sizes) -> list[Row]:
    k, a, d, e = len(fam.train_tasks), fam.act_dim, fam.obs_dim, cfg.ensemble
    n = data["obs"].shape[1]
    target = reward_target(e)
    members = init_members(e, target, k, d, a, jax.random.PRNGKey(9))
    L = sizes.ensemble_steps

    def fresh():
        return {"members": jax.tree.map(jnp.copy, members), "opt": jax.vmap(optax.adam(e.lr).init)(members),
                "key": jax.random.split(jax.random.PRNGKey(10), k)}

    t_step = timed(lambda: ensemble_chunk(e, target, cfg.lift, L, fresh(), data)) / L
    f_step = flops_of(lambda c: ensemble_chunk(e, target, cfg.lift, 1, c, data), fresh())
    # the relabelling pass goes through the transitions in calls of `rows` (ensembles.ensemble_outputs)
    rows = max(1, ACTIVATION_BUDGET // (k * e.members * max(target.hidden + (target.size,))))
    obs, act = data["obs"][0, :rows], data["actions"][0, :rows]
    t_call = timed(_mean_std, target, members, obs, act)
    f_call = flops_of(lambda m, o, aa: _mean_std(target, m, o, aa), members, obs, act)
    n_rel = rows * sizes.relabel_chunks or 64
    ds = relabel_dataset(fam, n_rel, extras, 11)
    relabel(e, members, ds, fam.true_reward)  # compiles any partial-call shape
    t = time.perf_counter()
    relabel(e, members, ds, fam.true_reward)
    t_rel = (time.perf_counter() - t) / (k * n_rel)
    return [
        Row("ensembles", f"reward ensembles `_chunk` ({e.members} members x K), lift={cfg.lift}",
            "gradient step (K tasks)", t_step, e.steps, f_step, short="reward ensembles"),
        Row("ensembles", "relabelling pass `relabel` (K ensembles on every transition, true rewards, masks)",
            "transition", t_rel, k * n, f_call / rows,
            note=f"timed once on {n_rel} transitions per task; flops: the jitted part", short="relabelling pass"),
        Row("ensembles", f"of which the jitted `_mean_std` ({rows} transitions per call)", "transition",
            t_call / rows, k * n, f_call / rows, "alt"),
    ]


def profile_distill(fam, cfg, data, teachers, sizes: Sizes, evals: dict) -> list[Row]:
    k, d, a, dc = len(fam.train_tasks), fam.obs_dim, fam.act_dim, cfg.distill
    n = data["obs"].shape[1]
    qn = jnp.array([0.0, 1.0])
    kl = jax.random.split(jax.random.PRNGKey(12))
    lab = {"accept": jax.random.uniform(kl[0], (k, k, n)) < 0.4, "reward": jax.random.normal(kl[1], (k, k, n))}
    rows, L = [], sizes.distill_steps
    n_evals = -(-dc.steps // dc.eval_every)
    for m in METHODS_RUN:
        method = METHODS[m]
        lab_m = lab if method.relabel != "none" else None
        p = S.init(dc, jax.random.PRNGKey(13), d, a)
        met = jax.eval_shape(lambda: loss_fn(dc, cfg.bcq, method, a, p, data, lab_m, teachers, qn,
                                             jax.random.PRNGKey(0))[1])
        carry = {"params": p, "opt": optimizer(dc).init(p), "key": jax.random.PRNGKey(14),
                 "metrics": jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), met)}
        fresh = lambda carry=carry: jax.tree.map(jnp.copy, carry)  # noqa: E731
        t_step = timed(lambda: distill_chunk(dc, cfg.bcq, method, a, L, fresh(), data, lab_m, teachers, qn)) / L
        f_step = flops_of(lambda c: distill_chunk(dc, cfg.bcq, method, a, 1, c, data, lab_m, teachers, qn), fresh())
        rows.append(Row("distillation", f"`{m}`: `_chunk` (loss_fn, Adam)", "gradient step", t_step, dc.steps, f_step,
                        short=f"distillation `{m}`"))
        rows += eval_rows("distillation", f"`{m}`: evaluation", evals, n_evals * cfg.eval.repeats)
    return rows


def eval_rows(stage: str, what: str, ev: dict, count: int) -> list[Row]:
    """Rows of `count` protocol runs on the training tasks and as many on the test tasks."""
    note = (f"{1e3 * ev['per_step']:.1f} ms per K-task env step; measured run: {ev['seconds']:.1f} s, "
            f"{ev['steps']} steps ({ev['steps'] / ev['episodes']:.0f} per episode, untrained student); "
            f"projected at {ev['horizon']} steps per episode")
    return [Row(stage, f"{what}, protocol on the {ev['k_train']} training tasks", "protocol", ev["train"], count,
                note=note),
            Row(stage, f"{what}, protocol on the {ev['k_test']} test tasks", "protocol", ev["test"], count,
                note="scaled from the training tasks' per-step time by the number of tasks")]


def measure_protocol(fam, cfg, params, sizes: Sizes) -> dict:
    """The student protocol's cost: measured on the training tasks; projected for full-length
    episodes, and for the test tasks by scaling the per-step time with the number of tasks."""
    ev = cfg.eval
    if sizes.eval_episodes is not None:  # score_from does not change the cost
        n = sizes.eval_episodes
        ev = dataclasses.replace(ev, episodes=n, score_from=min(ev.score_from, n - 1))
    k, kt, h = len(fam.train_tasks), len(fam.test_tasks), fam.horizon
    seconds, steps = student_protocol(fam, cfg, ev, params, fam.train_tasks)
    make_train, make_test = make_envs_time(fam, fam.train_tasks), make_envs_time(fam, fam.test_tasks)
    per_step = seconds / steps
    full = cfg.eval.episodes * h * per_step
    return {"seconds": seconds, "steps": steps, "episodes": ev.episodes, "per_step": per_step, "horizon": h,
            "k_train": k, "k_test": kt, "make_train": make_train,
            "train": make_train + full, "test": make_test + full * kt / k}


# ------------------------------------------------------------------------------------ report

def stage_totals(rows: list[Row]) -> dict:
    out = {}
    for stage in dict.fromkeys(r.stage for r in rows):
        mine = [r for r in rows if r.stage == stage]
        total = [r for r in mine if r.kind == "total"]
        out[stage] = total[0].projected if total else sum(r.projected for r in mine if r.kind == "part")
    return out


def fmt_s(x: float) -> str:
    if x >= 1:
        return f"{x:.2f} s"
    if x >= 1e-3:
        return f"{1e3 * x:.2f} ms"
    return f"{1e6 * x:.1f} µs"


def fmt_total(x: float) -> str:
    return f"{x / 60:.1f} min" if x >= 60 else f"{x:.0f} s"


def table(rows: list[Row], peak: float) -> str:
    totals = stage_totals(rows)
    head = ("| stage | part | unit | per unit | units (`cpu`) | projected | GFLOP/s | of peak | note |\n"
            "|---|---|---|---:|---:|---:|---:|---:|---|")
    out = [head]
    for stage, total in totals.items():
        for r in (r for r in rows if r.stage == stage):
            g = r.flops / r.seconds / 1e9 if r.flops else None
            proj = fmt_total(r.projected)
            if r.kind == "alt":
                proj = f"({proj})"
            part = f"**{r.part}**" if r.kind == "total" else r.part
            gflops, frac = ("", "") if g is None else (f"{g:.1f}", f"{100 * g / peak:.0f}%")
            out.append(f"| {stage} | {part} | {r.unit} | {fmt_s(r.seconds)} | {r.count:,.0f} | {proj} | "
                       f"{gflops} | {frac} | {r.note} |")
        out.append(f"| {stage} | **stage total** | | | | **{fmt_total(total)}** | | | |")
    out.append(f"| all | **pipeline total (projected)** | | | | **{fmt_total(sum(totals.values()))}** | | | |")
    return "\n".join(out)


def summary(rows: list[Row], peak: float) -> str:
    """Facts computed from the rows: stage shares, the collection step's split, the learners' peak fractions."""
    totals = stage_totals(rows)
    grand = sum(totals.values())
    shares = ", ".join(f"{s} {100 * v / grand:.0f}%" for s, v in sorted(totals.items(), key=lambda x: -x[1]))
    col = [r for r in rows if r.stage == "collection"]
    total = next(r for r in col if r.kind == "total").projected
    split = ", ".join(f"{r.short or r.part} {100 * r.projected / total:.0f}%" for r in col if r.kind == "part")
    fr = ", ".join(f"{r.short or r.part} {100 * r.flops / r.seconds / 1e9 / peak:.0f}%"
                   for r in rows if r.flops and r.kind != "alt")
    return (f"Projected shares of the pipeline: {shares}. The collection's end-to-end projection splits into: "
            f"{split}. Fraction of the matmul peak reached by the jitted updates: {fr}.")


def markdown(rows, peaks, meta) -> str:
    peak = max(peaks)
    return "\n".join([
        f"# Profile of the `cpu` preset: {meta['family']}",
        "",
        f"Measured {meta['date']} with `{meta['command']}` ({meta['wall']:.0f} s wall) on {meta['machine']}; "
        f"jax {jax.__version__}. fp32 matmul peak (2048³, measured in the same run): {peaks[0]:.1f} GFLOP/s "
        f"at the start, {peaks[1]:.1f} at the end; fractions below are of {peak:.1f}. Load average "
        f"(1 min) {meta['load'][0]:.2f} at the start and {meta['load'][1]:.2f} at the end, on {os.cpu_count()} cores.",
        "",
        "Per unit: best of 3 timed windows after a warm-up call (compilation excluded) unless the note says "
        "otherwise. *Projected* = measured seconds per unit x the units the preset's budget asks for "
        f"({meta['budget']}): a projection, not a measured stage time. Rows in parentheses are "
        "alternatives, not added to the stage total. GFLOP/s: XLA's cost analysis of one step "
        "(a length-1 chunk) over the measured time per step. The collection's stage total is "
        "`collect_host`'s measured time per step (before and with learning); its rows add up to it "
        "(the rest of the loop and the in-loop `_update` are differences of end-to-end times). Random "
        "data of the preset's shapes, untrained networks: evaluation episodes that end early (an "
        "untrained ant falls) are projected at full length.",
        "",
        table(rows, peak),
        "",
        summary(rows, peak),
        "",
    ])


def write_doc(path: Path, text: str) -> None:
    notes = ""
    if path.exists():
        old = path.read_text()
        if NOTES_MARK in old:
            notes = old[old.index(NOTES_MARK):]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + ("\n" + notes if notes else ""))


def machine() -> str:
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores, {jax.devices()[0].platform}"


# ------------------------------------------------------------------------------------ main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", default="ant-dir")
    ap.add_argument("--quick", action="store_true",
                    help="tiny windows: check every code path (the numbers mean little)")
    ap.add_argument("--out", type=Path, help="write the markdown report here (e.g. docs/profile.md)")
    args = ap.parse_args()
    start, load0 = time.perf_counter(), os.getloadavg()[0]
    sizes = QUICK if args.quick else FULL
    fam, cfg = get_family(args.family), preset(args.family, "cpu")
    if fam.jax_env is not None:
        raise SystemExit(f"{args.family} has a pure-JAX environment; this profiles the host-stepped MuJoCo families")
    k, d, a = len(fam.train_tasks), fam.obs_dim, fam.act_dim
    n = cfg.bcq.dataset_size or cfg.sac.total_steps
    peak0 = matmul_peak()
    print(f"{args.family}: K={k} tasks, {n} transitions per task; fp32 matmul peak {peak0:.1f} GFLOP/s", flush=True)

    def stage(name, fn, *a_):
        t = time.perf_counter()
        out = fn(*a_)
        print(f"  {name}: {time.perf_counter() - t:.0f} s", flush=True)
        return out

    rows = stage("collection", profile_collection, fam, cfg, sizes)
    with TaskEnvs(fam, fam.train_tasks[:1]) as one:
        extras = {m: np.repeat(v, k, 0) for m, v in one.step(np.zeros((1, a), np.float32))[3].items()}
    data = fake_data(k, n, d, a, jax.random.PRNGKey(15))
    teachers = init_teachers(cfg, k, d, a)
    params = S.init(cfg.distill, jax.random.PRNGKey(16), d, a)
    evals = stage("student protocol", measure_protocol, fam, cfg, params, sizes)
    rows += stage("teachers", profile_teachers, fam, cfg, data, teachers, sizes, evals)
    rows += stage("ensembles", profile_ensembles, fam, cfg, data, extras, sizes)
    rows += stage("distillation", profile_distill, fam, cfg, data, teachers, sizes, evals)
    rows += eval_rows("evaluate", "final evaluation (all methods)", evals, len(METHODS_RUN) * cfg.eval.repeats)
    peak1 = matmul_peak()
    wall = time.perf_counter() - start
    budget = (f"SAC {cfg.sac.total_steps:,} env steps ({cfg.sac.warmup_steps:,} before learning); BCQ "
              f"{cfg.bcq.steps:,} steps, evaluated every {cfg.bcq.eval_every:,} with {cfg.bcq.eval_episodes} episodes; "
              f"ensembles {cfg.ensemble.steps:,} steps; distillation {cfg.distill.steps:,} steps per method "
              f"({', '.join(METHODS_RUN)}), evaluated every {cfg.distill.eval_every:,}; protocol "
              f"{cfg.eval.episodes} episodes x {cfg.eval.repeats} repeat(s) on the training and test tasks")
    meta = {"family": args.family, "date": datetime.date.today().isoformat(), "wall": wall, "machine": machine(),
            "command": "python benchmarks/profile.py " + " ".join(sys.argv[1:]), "load": (load0, os.getloadavg()[0]),
            "budget": budget}
    text = markdown(rows, (peak0, peak1), meta)
    print("\n" + text)
    if args.out:
        write_doc(args.out, text)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
