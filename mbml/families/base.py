"""What a task family is: tasks, environments and (where known) the true reward.

A *family* is a distribution of tasks sharing state and action spaces (paper §2.2). Training tasks
build the datasets; test tasks are the unseen, within-distribution tasks of the evaluation (spec §1.1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Protocol

import numpy as np


class JaxEnv(NamedTuple):
    """A pure-JAX environment, so collection and evaluation of all tasks run jitted.

    reset(key, task) -> (state, obs); step(state, action, task) -> (state, obs, reward, terminal).
    `state` is any pytree; `task` is the family's parameter vector. Time limits are imposed by the
    caller (horizon), never stored as terminal (spec §1.2).
    """

    reset: Callable[[Any, Any], tuple[Any, Any]]
    step: Callable[[Any, Any, Any], tuple[Any, Any, Any, Any]]


class TrueReward(Protocol):
    def __call__(self, task: np.ndarray, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray,
                 extras: dict[str, np.ndarray]) -> np.ndarray: ...


class StateView(NamedTuple):
    """Where a task's data went, for the datasets figure (the paper's Fig. 1 picture).

    points(obs [N, obs], extras {k: [N, ...]}, starts [N] bool: first step of an episode) gives [N, 2]
    positions (a scatter) or [N] values (a histogram); `labels` names the axes; `tasks` says how the
    family's task parameters are drawn on it: "points" (goals), "directions" (rays from the origin),
    "values" (vertical lines) or "" (not drawn).
    """

    points: Callable[[np.ndarray, dict, np.ndarray], np.ndarray]
    labels: tuple[str, ...]
    tasks: str = ""


def _episode_sums(key: str):
    def positions(obs, extras, starts):
        delta = np.asarray(extras[key], np.float64)
        total = np.cumsum(delta, axis=0)
        first = np.maximum.accumulate(np.where(starts, np.arange(len(starts)), 0))
        return total - total[first] + delta[first]  # position after each step, from 0 at each episode start
    return positions


def xy_from(key: str, tasks: str) -> StateView:
    """Positions summed from per-step xy displacements stored in `extras[key]`."""
    return StateView(_episode_sums(key), ("x (sum of steps in the episode)", "y"), tasks)


def velocity_from(key: str, dt: float, tasks: str = "") -> StateView:
    """Forward velocity from a per-step x displacement stored in `extras[key]`."""
    return StateView(lambda obs, extras, starts: np.asarray(extras[key], np.float64) / dt,
                     ("forward velocity (m/s)",), tasks)


OBS_XY = StateView(lambda obs, extras, starts: obs[:, :2], ("observation[0] (x)", "observation[1] (y)"), "points")


@dataclass(frozen=True, eq=False)  # hashed by identity: families are cached singletons, static under jit
class Family:
    """A task family. Task arrays have shape [num_tasks, task_dim]."""

    name: str
    obs_dim: int
    act_dim: int
    horizon: int
    train_tasks: np.ndarray
    test_tasks: np.ndarray
    make_env: Callable[..., Any] | None
    """make_env(task, **options) -> gymnasium.Env whose task can change via env.unwrapped.set_task
    (None: no simulator, for data without a family: `data_family`)."""
    ood_tasks: np.ndarray | None = None
    true_reward: TrueReward | None = None
    """Reward of any task for stored transitions; used by `gt_relabel` and to measure relabelling error."""
    jax_env: JaxEnv | None = None
    oracle: Callable[[Any, Any], Any] | None = None
    """oracle(obs, task) -> action: a scripted policy that knows the task (score reference)."""
    dynamics_differ: bool = False
    """Tasks differ in transition function too: relabel next states as well (spec §4.2)."""
    extras: tuple[str, ...] = ()
    """Per-step info keys that datasets store because `true_reward` needs them."""
    max_action: float = 1.0
    notes: str = ""
    view: StateView = OBS_XY
    """How the datasets figure shows the states each task's data visited."""
    task_names: tuple[str, ...] = field(default_factory=tuple)

    @property
    def simulated(self) -> bool:
        """Whether episodes can be run (online evaluation, collection): False for `data_family`."""
        return self.make_env is not None or self.jax_env is not None


def data_family(obs_dim: int, act_dim: int, tasks: np.ndarray) -> Family:
    """What is known of the family of data imported without one: their sizes and tasks (the training
    tasks); no simulator, no true reward, no test tasks."""
    tasks = np.asarray(tasks, np.float64)
    return Family(name="(no family)", obs_dim=obs_dim, act_dim=act_dim, horizon=0, train_tasks=tasks,
                  test_tasks=tasks[:0], make_env=None, notes="data imported without a family")
