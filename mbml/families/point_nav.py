"""`point-nav`: the 2-D navigation toy of the paper's Fig. 1.

A point starts at the origin; the task is a goal on the upper half of the unit circle. The policy's
action in [-1, 1]^2 is scaled to a position change in [-0.1, 0.1]^2 (as the authors' NormalizedBoxEnv
scales actions to the control range); reward = -||p' - g|| after the step; horizon 20; no termination.
"""

from __future__ import annotations

import functools

import gymnasium as gym
import jax.numpy as jnp
import numpy as np

from mbml.errors import MbmlError
from mbml.families.base import Family, JaxEnv

HORIZON = 20
STEP_SIZE = 0.1
NUM_TRAIN, NUM_TEST = 10, 8
TASK_SEED = 1337


def goal_angles(seed: int = TASK_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Training and test goal angles (radians).

    Training angles are stratified over [0, pi] (one per tenth of the half circle, jittered) so that
    they span it; test angles are drawn uniformly between the smallest and largest training angle,
    so every test goal lies between two training goals (within distribution, as in the paper).
    """
    rng = np.random.RandomState(seed)
    k = np.arange(NUM_TRAIN)
    train = np.pi * (k + 0.5 + rng.uniform(-0.3, 0.3, NUM_TRAIN)) / NUM_TRAIN
    test = np.sort(rng.uniform(train.min(), train.max(), NUM_TEST))
    return train, test


def _goals(angles: np.ndarray) -> np.ndarray:
    return np.stack([np.cos(angles), np.sin(angles)], axis=-1)


def reset(key, task):
    del key, task
    pos = jnp.zeros(2, jnp.float32)
    return pos, pos


def step(pos, action, task):
    pos = pos + STEP_SIZE * jnp.clip(action, -1.0, 1.0)
    reward = -jnp.linalg.norm(pos - task[:2])
    return pos, pos, reward, jnp.zeros((), bool)


def oracle(obs, task):
    """Scripted policy that knows the goal: the largest step towards it (per-axis clipped)."""
    return jnp.clip((task[:2] - obs) / STEP_SIZE, -1.0, 1.0)


def true_reward(task, obs, action, next_obs, extras=None):
    del obs, action, extras
    return -np.linalg.norm(np.asarray(next_obs)[..., :2] - np.asarray(task)[:2], axis=-1)


class PointNavEnv(gym.Env):
    """Gymnasium version of the toy, for users; the pipeline uses the pure-JAX `reset`/`step`."""

    metadata = {"render_modes": []}

    def __init__(self, task=(1.0, 0.0)):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.set_task(task)
        self._pos = np.zeros(2, np.float32)

    def set_task(self, task):
        task = np.asarray(task, np.float64)
        if task.shape != (2,) or not np.all(np.isfinite(task)):
            raise MbmlError(f"point-nav task must be a finite 2-D goal, got shape {task.shape}")
        self.task = task

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._pos = np.zeros(2, np.float32)
        return self._pos.copy(), {}

    def step(self, action):
        self._pos = (self._pos + STEP_SIZE * np.clip(action, -1.0, 1.0)).astype(np.float32)
        reward = -float(np.linalg.norm(self._pos - self.task))
        return self._pos.copy(), reward, False, False, {}


@functools.cache
def family() -> Family:
    train, test = goal_angles()
    return Family(
        name="point-nav", obs_dim=2, act_dim=2, horizon=HORIZON,
        train_tasks=_goals(train), test_tasks=_goals(test),
        make_env=lambda task, **kw: PointNavEnv(task, **kw),
        true_reward=true_reward, jax_env=JaxEnv(reset, step), oracle=oracle,
        notes="2-D point, goal on the upper unit half circle (paper Fig. 1).")

