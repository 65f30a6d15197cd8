"""Task values of the six MuJoCo families, and how an env accepts a task (spec §1.1, §1.2).

Every generator replays the authors' `generate_goals.py` law with numpy's legacy Mersenne-Twister
stream. `np.random.RandomState(seed)` yields exactly the draws of `np.random.seed(seed)` followed by
`np.random.*`, without touching numpy's global state. The split tables are float64 arrays of shape
[num_tasks, task_dim]; `tests/test_mujoco_families.py` checks them against the values printed in
the spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import numpy as np

from mbml.errors import MbmlError


class TaskSplits(NamedTuple):
    """Training, test ("WD", within-distribution) and out-of-distribution tasks, each [K, P]."""

    train: np.ndarray
    test: np.ndarray
    ood: np.ndarray | None


def _column(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(-1, 1)


def _disk_sector(angle: np.ndarray, rs: np.random.RandomState) -> np.ndarray:
    """Goals at `angle` with radius 3·sqrt(U(0,1)): uniform over a sector of the radius-3 disk."""
    radius = 3 * rs.random_sample(len(angle)) ** 0.5
    return np.stack((radius * np.cos(angle), radius * np.sin(angle)), axis=-1)


# AntDir / HumanoidDir-M: one draw of 32 candidates, of which these were hand-picked (spec §1.2).
DIR_PICKED = (0, 1, 4, 10, 12, 14, 17, 21, 26, 27)
# HalfCheetahVel ("hard" mode): hand-picked among 32 candidate velocities.
VEL_PICKED = (3, 5, 8, 15, 16, 17, 23, 24, 29, 31)


def direction_tasks() -> TaskSplits:
    """AntDir and HumanoidDir-M share one goal pickle: θ (radians); seed 1337."""
    rs = np.random.RandomState(1337)
    candidates = rs.uniform(0.0, 1.5, size=32) * np.pi
    test = rs.uniform(0.0, 1.0, size=8) * np.pi * 2 / 3
    ood = rs.uniform(2 / 3, 1.0, size=8) * np.pi
    return TaskSplits(_column(candidates[list(DIR_PICKED)]), _column(test), _column(ood))


def ant_goal_tasks() -> TaskSplits:
    """AntGoal: 2-D goals, angle U(0, 2π/3) (OOD: U(2π/3, π)), radius 3·sqrt(U(0,1)); seed 1337."""
    rs = np.random.RandomState(1337)
    # Same operation order as the authors' script, so the values agree to the last bit.
    train = _disk_sector(rs.random_sample(10) * np.pi * 2 / 3, rs)
    test = _disk_sector(rs.random_sample(8) * np.pi * 2 / 3, rs)
    ood = _disk_sector(rs.uniform(2 / 3, 1.0, size=8) * np.pi, rs)
    return TaskSplits(train, test, ood)


def cheetah_vel_tasks() -> TaskSplits:
    """HalfCheetahVel "hard": target velocities, 32 candidates U(0,1.5) picked by index; seed 1337."""
    rs = np.random.RandomState(1337)
    candidates = rs.uniform(0.0, 1.5, size=32)
    test = rs.uniform(0.5, 1.5, size=8)
    ood = rs.uniform(1.5, 2.5, size=8)
    return TaskSplits(_column(candidates[list(VEL_PICKED)]), _column(test), _column(ood))


def _umaze_goals(rs: np.random.RandomState) -> np.ndarray:
    x = np.concatenate((rs.uniform(0.4, 1.2, size=5), rs.uniform(2.4, 3.2, size=5)))
    y = rs.uniform(1.0, 2.0, size=10)
    return np.stack((x, y), axis=-1)


def umaze_tasks() -> TaskSplits:
    """UmazeGoal-M: targets in qpos coordinates, 5 in the upper arm then 5 in the lower; seed 1336.

    The test list has 10 goals, as the authors' pickle; its "ood" entry is a 1-D placeholder
    that no script uses, so there are no OOD tasks here.
    """
    rs = np.random.RandomState(1336)
    return TaskSplits(_umaze_goals(rs), _umaze_goals(rs), None)


# WalkerParam task vector: log-multiplier exponents for these model arrays, in this order, each
# flattened row-major (walker model: 8 bodies incl. world, 9 dofs, 8 geoms incl. floor).
WALKER_GROUPS: tuple[tuple[str, int], ...] = (
    ("body_mass", 8), ("body_inertia", 24), ("dof_damping", 9), ("geom_friction", 24))
WALKER_TASK_DIM = sum(n for _, n in WALKER_GROUPS)  # 65
WALKER_BASE = {"body_mass": 1.5, "body_inertia": 1.5, "dof_damping": 1.3, "geom_friction": 1.5}
WALKER_LIMIT = 3.0  # rand_param_envs log_scale_limit: no exponent beyond ±3


def walker_param_tasks() -> TaskSplits:
    """WalkerParam: our seeded stand-in for the authors' unreproducible pickle (spec §1.2).

    Seed 1337; draws in this order: 32 train vectors U(-2, 2)^65 (first 30 kept, as the authors keep
    30 of 32), 8 test vectors U(-2, 2)^65, then for OOD 8x4 signs (one per task and parameter group,
    + if U(0,1) >= 0.5) and 8x65 magnitudes U(2, 3): |e| in [2, 3] with a common sign per group, the
    structure back-computed from the authors' OOD tasks.
    """
    rs = np.random.RandomState(1337)
    train = rs.uniform(-2.0, 2.0, size=(32, WALKER_TASK_DIM))[:30]
    test = rs.uniform(-2.0, 2.0, size=(8, WALKER_TASK_DIM))
    signs = np.where(rs.random_sample((8, len(WALKER_GROUPS))) >= 0.5, 1.0, -1.0)
    magnitude = rs.uniform(2.0, 3.0, size=(8, WALKER_TASK_DIM))
    group_of = np.repeat(np.arange(len(WALKER_GROUPS)), [n for _, n in WALKER_GROUPS])
    return TaskSplits(train, test, magnitude * signs[:, group_of])


@dataclass(frozen=True)
class TaskSpace:
    """What a family's env accepts as `task`: bounds per parameter and the named splits.

    Bounds are sanity limits (documented in docs/families.md), not the task distribution.
    """

    family: str
    low: tuple[float, ...]
    high: tuple[float, ...]
    splits: Callable[[], TaskSplits]

    @property
    def dim(self) -> int:
        return len(self.low)

    def check(self, task: Any) -> np.ndarray:
        """The task as a float64 [P] vector; a one-line MbmlError if it has the wrong shape or range."""
        try:
            vec = np.asarray(task, dtype=np.float64)
        except (TypeError, ValueError):
            raise MbmlError(f"{self.family}: task must be numbers, got {task!r}") from None
        if vec.ndim == 0 and self.dim == 1:
            vec = vec.reshape(1)
        if vec.shape != (self.dim,):
            raise MbmlError(f"{self.family}: task must have shape ({self.dim},), got {vec.shape}")
        low, high = np.asarray(self.low), np.asarray(self.high)
        bad = ~(np.isfinite(vec) & (vec >= low) & (vec <= high))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise MbmlError(f"{self.family}: task parameter {i} = {vec[i]!r} is outside "
                            f"[{low[i]:g}, {high[i]:g}]")
        return vec

    def resolve(self, task: Any) -> np.ndarray:
        """Accept a parameter vector, a "split:index" name such as "test:3", or None (train:0)."""
        if task is None:
            task = "train:0"
        if isinstance(task, str):
            split, _, index = task.partition(":")
            table = getattr(self.splits(), split, None) if split in TaskSplits._fields else None
            if table is None:
                raise MbmlError(f"{self.family}: unknown task split in {task!r}; "
                                "use train:<i>, test:<i> or ood:<i> where the family has them")
            if not index.isdigit() or int(index) >= len(table):
                raise MbmlError(f"{self.family}: unknown task index in {task!r}; "
                                f"{split} has indices 0..{len(table) - 1}")
            return table[int(index)].copy()
        return self.check(task)


def batch_task(task: np.ndarray, dim: int) -> np.ndarray:
    """A task as [P] or [N, P] float64 so `true_reward` can broadcast it against a batch."""
    task = np.asarray(task, dtype=np.float64)
    if task.ndim == 0 and dim == 1:
        task = task.reshape(1)
    if task.shape[-1:] != (dim,):
        raise MbmlError(f"task must end in a dimension of size {dim}, got shape {task.shape}")
    return task
