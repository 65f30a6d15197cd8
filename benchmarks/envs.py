"""Env steps/s of the MuJoCo families beside gymnasium's stock v5 env of the same robot (not a test).

    pip install -e '.[bench]'          # imageio: gymnasium's MuJoCo envs import it
    python benchmarks/envs.py [--steps 2000] [--rounds 5] [--k 10] [--batch-steps 300]

Part 1: for each family, our `mbml/<Name>-v0` (via `gymnasium.make`, so with the same TimeLimit /
OrderEnforcing / PassiveEnvChecker wrappers as the stock env) and the stock env, both stepped with
the same uniform random actions in [-1, 1] (mapped affinely to the stock env's action box), reset
whenever an episode terminates or is truncated (both at the family's horizon), timed in alternating
rounds (ours, stock, then stock, ours, ...) and reported as the median. Beside the wall-clock ratio:
the simulated seconds per env step of each (our families keep the authors' timestep and frame skip,
which differ from v5 for the walker) and the ratio per simulated second; the physics cost alone
(`mj_step` x frame skip, plus `mj_rnePostConstraint` where the env calls it, on a bare MjData of the
env's model) so the note can say whether physics or Python accounts for a gap; and, for each family
below 0.9, the costliest functions of our env under cProfile. umaze-goal has no v5 env in
gymnasium: it is compared with a bare loop on the same model (set ctrl, `mj_step`, read qpos/qvel,
reset at the horizon), the floor any Python env can reach.

Part 2: K halfcheetah-vel envs in `mbml.hostenv.TaskEnvs`, stepped sequentially and on 2 and 4
threads, as env steps/s and ratio to sequential (same alternation and median); then the same for
humanoid-dir, whose step is mostly physics (the best case for threads, since `mj_step` releases the
GIL but the env's Python does not).

A markdown copy of both tables is printed at the end for the README.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import platform
import pstats
import statistics
import sys
import time
from dataclasses import dataclass

import gymnasium as gym
import mujoco
import numpy as np

import mbml.families.mujoco  # noqa: F401  (registers the mbml/* gym ids)
from mbml.families import get_family
from mbml.families.mujoco import ENV_IDS
from mbml.hostenv import TaskEnvs

# family -> (our gym id, stock gym id or None for the bare-loop comparison)
PAIRS: dict[str, tuple[str, str | None]] = {
    "ant-dir": ("mbml/AntDir-v0", "Ant-v5"),
    "ant-goal": ("mbml/AntGoal-v0", "Ant-v5"),
    "halfcheetah-vel": ("mbml/HalfCheetahVel-v0", "HalfCheetah-v5"),
    "humanoid-dir": ("mbml/HumanoidDir-v0", "Humanoid-v5"),
    "walker-param": ("mbml/WalkerParam-v0", "Walker2d-v5"),
    "umaze-goal": ("mbml/UmazeGoal-v0", None),
}

# How each family's physics differs from its reference (settings, checked against the compiled
# models): the note quotes it when the measured physics time accounts for most of a gap.
PHYSICS = {
    "ant-dir": "same model and steps; v5 adds mj_rnePostConstraint (ours only with contact_forces)",
    "ant-goal": "same model and steps; v5 adds mj_rnePostConstraint (ours only with contact_forces)",
    "halfcheetah-vel": "same model, timestep 0.01 and frame skip 5",
    "humanoid-dir": "same model and steps; v5 adds mj_rnePostConstraint (ours only with contact_forces)",
    "walker-param": "both 4 RK4 sub-steps, ours at the authors' 0.004 s (v5: 0.002 s), so a step "
                    "simulates 2x the time and random-action episodes end in fewer steps",
    "umaze-goal": "same model; no stock v5 env, the reference is a bare mj_step loop",
}


class BareLoop:
    """The floor of a Python env on a model: set ctrl, mj_step x frame_skip, read qpos/qvel."""

    def __init__(self, model: mujoco.MjModel, frame_skip: int, horizon: int):
        self.model, self.data = model, mujoco.MjData(model)
        self.frame_skip, self.horizon, self.t = frame_skip, horizon, 0
        self.dt = float(model.opt.timestep) * frame_skip

    def reset(self, seed=None):
        mujoco.mj_resetData(self.model, self.data)
        mujoco.mj_forward(self.model, self.data)
        self.t = 0
        return np.concatenate((self.data.qpos, self.data.qvel)), {}

    def step(self, action):
        self.data.ctrl[:] = action
        mujoco.mj_step(self.model, self.data, nstep=self.frame_skip)
        self.t += 1
        obs = np.concatenate((self.data.qpos, self.data.qvel))
        return obs, 0.0, False, self.t >= self.horizon, {}

    def close(self):
        pass


@dataclass
class Side:
    """One env of a comparison: how to build it, its actions, and what its step simulates."""

    name: str
    env: object
    actions: np.ndarray
    dt: float
    model: mujoco.MjModel
    frame_skip: int
    rne: bool  # calls mj_rnePostConstraint after every step


def steps_per_second(env, actions: np.ndarray, count: list | None = None) -> float:
    """Random-action steps/s, resetting at every episode end (reset time included)."""
    env.reset(seed=0)
    resets = 0
    t = time.perf_counter()
    for a in actions:
        _, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            env.reset()
            resets += 1
    sps = len(actions) / (time.perf_counter() - t)
    if count is not None:
        count.append(resets)
    return sps


def physics_us(side: Side, horizon: int, steps: int) -> float:
    """Microseconds of bare MuJoCo per env step on a fresh MjData of the side's model."""
    model, data = side.model, mujoco.MjData(side.model)
    ctrl = side.actions[:steps]
    if side.name == "ours":  # our env maps [-1, 1] to the ctrlrange; the others' actions already are
        low, high = model.actuator_ctrlrange.T
        ctrl = low + (ctrl + 1) / 2 * (high - low)
    t = time.perf_counter()
    for i, c in enumerate(ctrl):
        if i % horizon == 0:
            mujoco.mj_resetData(model, data)
            mujoco.mj_forward(model, data)
        data.ctrl[:] = c
        mujoco.mj_step(model, data, nstep=side.frame_skip)
        if side.rne:
            mujoco.mj_rnePostConstraint(model, data)
    return (time.perf_counter() - t) / len(ctrl) * 1e6


def make_pair(family: str, steps: int, seed: int) -> tuple[Side, Side]:
    ours_id, stock_id = PAIRS[family]
    horizon = ENV_IDS[ours_id][1]
    ours = gym.make(ours_id, task="train:0")
    u = ours.unwrapped
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, (steps, u.action_space.shape[0]))
    a = Side("ours", ours, actions, u.dt, u.model, u.frame_skip, u.contact_forces)
    if stock_id is None:
        low, high = u.ctrl_low, u.ctrl_high
        ref = BareLoop(u.model, u.frame_skip, horizon)
        return a, Side("bare", ref, low + (actions + 1) / 2 * (high - low), ref.dt, u.model,
                       u.frame_skip, False)
    stock = gym.make(stock_id, max_episode_steps=horizon)
    s = stock.unwrapped
    low, high = stock.action_space.low, stock.action_space.high
    return a, Side(stock_id, stock, low + (actions + 1) / 2 * (high - low), s.dt, s.model,
                   s.frame_skip, True)  # gymnasium's MujocoEnv always calls mj_rnePostConstraint


def alternate(fns: dict, rounds: int) -> dict:
    """Median of `rounds` calls of each fn, alternating their order every round (after a warm-up)."""
    for fn in fns.values():
        fn(warm=True)
    names, out = list(fns), {n: [] for n in fns}
    for r in range(rounds):
        for n in (names if r % 2 == 0 else names[::-1]):
            out[n].append(fns[n](warm=False))
    return {n: statistics.median(v) for n, v in out.items()}


def profile_top(env, actions: np.ndarray, n: int = 4) -> str:
    """Our env's n costliest functions (cumulative, µs per env step under cProfile, which inflates
    small calls), leaving out the step/reset wrappers and the mj_step they call."""
    prof = cProfile.Profile()
    prof.enable()
    steps_per_second(env, actions)
    prof.disable()
    stats = pstats.Stats(prof).stats
    skip = {"step", "reset", "_simulate", "steps_per_second"}
    rows = sorted(((ct, func) for func, (_, _, _, ct, _) in stats.items()
                   if "/mbml/" in func[0] and func[2] not in skip), reverse=True)
    return ", ".join(f"{name} {ct / len(actions) * 1e6:.0f}" for ct, (_, _, name) in rows[:n])


def env_table(steps: int, rounds: int) -> list[dict]:
    rows = []
    for family in PAIRS:
        ours, ref = make_pair(family, steps, seed=0)
        horizon = get_family(family).horizon
        warm_n = min(200, steps)
        episodes = {"ours": [], "ref": []}
        speed = alternate({
            side: (lambda warm, e=e, side=side: steps_per_second(
                e.env, e.actions[:warm_n] if warm else e.actions, None if warm else episodes[side]))
            for side, e in (("ours", ours), ("ref", ref))
        }, rounds)
        phys = alternate({
            "ours": lambda warm: physics_us(ours, horizon, warm_n if warm else steps),
            "ref": lambda warm: physics_us(ref, horizon, warm_n if warm else steps),
        }, rounds)
        row = {"family": family, "ref": PAIRS[family][1] or "bare mj_step loop",
               "ours": speed["ours"], "stock": speed["ref"], "ratio": speed["ours"] / speed["ref"],
               "dt": (ours.dt, ref.dt), "phys": (phys["ours"], phys["ref"])}
        row["ratio_sim"] = row["ratio"] * ours.dt / ref.dt
        us = (1e6 / row["ours"], 1e6 / row["stock"])
        row["py"] = (us[0] - phys["ours"], us[1] - phys["ref"])
        row["episodes"] = (episodes["ours"][0], episodes["ref"][0])
        row["note"] = ""
        if row["ratio"] < 0.9:
            row["profile"] = profile_top(ours.env, ours.actions[:min(steps, 1000)])
            gap_phys, gap_rest = phys["ours"] - phys["ref"], row["py"][0] - row["py"][1]
            note = [f"µs/step physics {phys['ours']:.0f} vs {phys['ref']:.0f}, rest "
                    f"{row['py'][0]:.0f} vs {row['py'][1]:.0f}"]
            if row["episodes"][0] != row["episodes"][1]:
                note.append(f"{row['episodes'][0]} vs {row['episodes'][1]} resets")
            if row["ratio_sim"] >= 0.9:
                note.append(f"per simulated second {row['ratio_sim']:.2f}")
            cause = (PHYSICS[family] if gap_phys > gap_rest
                     else f"Python: {PHYSICS[family] + '; ' if row['ref'].startswith('bare') else ''}"
                          f"ours spends (µs/step, cProfile) {row['profile']}")
            row["note"] = "; ".join(note) + ". " + cause
        ours.env.close()
        ref.env.close()
        rows.append(row)
        print(f"  {family:16s} ours {row['ours']:8.0f}/s  {row['ref']:18s} {row['stock']:8.0f}/s  "
              f"ratio {row['ratio']:.2f}", flush=True)
    return rows


def threads_table(name: str, k: int, batch_steps: int, rounds: int, thread_counts=(1, 2, 4)) -> list[dict]:
    """K envs of family `name` in TaskEnvs on 1, 2, 4 threads: env steps/s (resets included)."""
    family = get_family(name)
    tasks = np.resize(np.asarray(family.train_tasks), (k, family.train_tasks.shape[1]))
    rng = np.random.default_rng(1)
    actions = rng.uniform(-1, 1, (batch_steps, k, family.act_dim)).astype(np.float32)
    envs = {n: TaskEnvs(family, tasks, threads=n) for n in thread_counts}

    def run(n, warm):
        e = envs[n]
        e.reset(range(k))
        acts = actions[:20] if warm else actions
        t = time.perf_counter()
        for a in acts:
            _, _, term, _ = e.step(a)
            for i in np.flatnonzero(term):
                e.reset_one(i, i)
        return k * len(acts) / (time.perf_counter() - t)

    speed = alternate({n: (lambda warm, n=n: run(n, warm)) for n in thread_counts}, rounds)
    for e in envs.values():
        e.close()
    return [{"family": name, "threads": n, "sps": speed[n], "ratio": speed[n] / speed[thread_counts[0]]}
            for n in thread_counts]


def _warning(msg: str) -> None:
    """MuJoCo warnings to stderr, not to ./MUJOCO_LOG.TXT; gymnasium's HalfCheetah-v5 asset still
    uses the deprecated `settotalmass` (our copy does not), which is not news here."""
    if "settotalmass" not in msg:
        print(f"MuJoCo warning: {msg}", file=sys.stderr)


def main():
    mujoco.set_mju_user_warning(_warning)
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2000, help="env steps per timed run (part 1)")
    ap.add_argument("--rounds", type=int, default=5, help="alternating timed rounds; the median is kept")
    ap.add_argument("--k", type=int, default=10, help="task envs in TaskEnvs (part 2)")
    ap.add_argument("--batch-steps", type=int, default=300, help="TaskEnvs.step calls per timed run")
    args = ap.parse_args()
    t0 = time.perf_counter()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible; mujoco "
          f"{mujoco.__version__}, gymnasium {gym.__version__}; {args.steps} steps x {args.rounds} "
          "alternating rounds, median\n")
    rows = env_table(args.steps, args.rounds)
    print()
    hdr = (f"{'family':16s} {'reference':18s} {'ours/s':>8s} {'ref/s':>8s} {'ratio':>6s} "
           f"{'dt ours/ref (s)':>16s} {'ratio/sim-s':>11s}  note")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(f"{r['family']:16s} {r['ref']:18s} {r['ours']:8.0f} {r['stock']:8.0f} {r['ratio']:6.2f} "
              f"{r['dt'][0]:>7.3f}/{r['dt'][1]:<8.3f} {r['ratio_sim']:11.2f}  {r['note']}")
    profiled = [r for r in rows if "profile" in r]
    if profiled:
        print("\nour env's costliest functions besides mj_step (cumulative µs per step, cProfile):")
        for r in profiled:
            print(f"  {r['family']:16s} {r['profile']}")

    trows = []
    # humanoid-dir: the most physics per step of Python, so the best case for threads
    for name, n in (("halfcheetah-vel", args.batch_steps), ("humanoid-dir", max(1, args.batch_steps // 3))):
        print(f"\nTaskEnvs: K={args.k} {name} envs, {n} batched steps per run", flush=True)
        rows_t = threads_table(name, args.k, n, args.rounds)
        for r in rows_t:
            print(f"  threads={r['threads']}: {r['sps']:8.0f} env steps/s  {r['ratio']:.2f}x sequential")
        trows += rows_t

    print("\n<!-- benchmarks/envs.py -->")
    print("| family | reference | ours steps/s | reference steps/s | ratio | dt ours / ref (s) | "
          "ratio per simulated s | note |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['family']} | {r['ref']} | {r['ours']:.0f} | {r['stock']:.0f} | {r['ratio']:.2f} | "
              f"{r['dt'][0]:.3f} / {r['dt'][1]:.3f} | {r['ratio_sim']:.2f} | {r['note']} |")
    print(f"\n| TaskEnvs, K={args.k} envs | threads | env steps/s | vs sequential |")
    print("|---|---:|---:|---:|")
    for r in trows:
        print(f"| {r['family']} | {r['threads']} | {r['sps']:.0f} | {r['ratio']:.2f} |")
    print(f"\n({os.cpu_count()} CPUs; total benchmark time {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
