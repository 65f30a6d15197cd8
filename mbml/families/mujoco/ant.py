"""AntDir and AntGoal (spec §1.2): the gym Ant-v2 robot with the authors' task rewards.

Both keep the Ant-v2 contact-force block (14 bodies x 6, clipped to ±1) in the observation and the
contact cost 0.5e-3·Σ clip(cfrc_ext)², both zero by default as in the authors' MuJoCo 2.0 runs
(spec §1.3 item 1). `true_reward` reads the contact block back from `next_obs`, so it agrees with
the env whether or not `contact_forces=True`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mbml.families.base import Family, StateView, xy_from
from mbml.families.mujoco.base import MujocoTaskEnv, load_model, rescale_action
from mbml.families.mujoco.tasks import TaskSpace, ant_goal_tasks, batch_task, direction_tasks

FRAME_SKIP = 5
DT = 0.01 * FRAME_SKIP  # ant.xml timestep x frame skip
CTRL_LOW, CTRL_HIGH = -1.0, 1.0  # ant.xml ctrlrange of all 8 motors
CFRC_DIM = 14 * 6
HORIZON = 200


def contact_cost(next_obs: np.ndarray) -> np.ndarray:
    """0.5e-3·Σ clip(cfrc_ext, -1, 1)² from the observation's last 84 (already clipped) dims."""
    return 0.5e-3 * np.sum(np.square(next_obs[..., -CFRC_DIM:]), axis=-1)


class AntTaskEnv(MujocoTaskEnv):
    """Ant-v2 physics and reset: qpos + U(-0.1, 0.1), qvel + 0.1·N(0, 1)."""

    include_xy: bool  # AntGoal observes the torso x, y; AntDir does not

    def __init__(self, task: Any = None, *, contact_forces: bool = False,
                 render_mode: str | None = None):
        obs_dim = (15 if self.include_xy else 13) + 14 + CFRC_DIM
        super().__init__(load_model("ant.xml"), FRAME_SKIP, obs_dim, task,
                         contact_forces=contact_forces, render_mode=render_mode)

    def _reset_model(self) -> None:
        qpos = self.init_qpos + self.np_random.uniform(-0.1, 0.1, self.model.nq)
        qvel = self.init_qvel + 0.1 * self.np_random.standard_normal(self.model.nv)
        self.set_state(qpos, qvel)

    def _observation(self) -> np.ndarray:
        qpos = self.data.qpos if self.include_xy else self.data.qpos[2:]
        return np.concatenate((qpos, self.data.qvel, np.clip(self.contact_forces_obs(), -1.0, 1.0)))

    def _contact_cost(self) -> float:
        return 0.5e-3 * float(np.sum(np.square(np.clip(self.contact_forces_obs(), -1.0, 1.0))))


class AntDirEnv(AntTaskEnv):
    """Run in direction θ: r = v_xy·(cos θ, sin θ) - 0.5‖a‖² - contact + 1 (survive).

    Terminates when the state is not finite or the torso height leaves [0.2, 1.0].
    `info["xy_delta"]` is the torso displacement of the step (the observation omits x, y).
    """

    include_xy = False
    task_space = TaskSpace("ant-dir", (-2 * np.pi,), (2 * np.pi,), direction_tasks)

    def _before_step(self) -> np.ndarray:
        return self.body_com("torso")

    def _after_step(self, before, ctrl, obs):
        xy_delta = (self.body_com("torso") - before)[:2]
        theta = self.task[0]
        forward = float(np.dot(xy_delta / self.dt, (np.cos(theta), np.sin(theta))))
        ctrl_cost = 0.5 * float(np.sum(np.square(ctrl)))
        contact = self._contact_cost()
        reward = forward - ctrl_cost - contact + 1.0
        state = np.concatenate((self.data.qpos, self.data.qvel))
        healthy = bool(np.isfinite(state).all() and 0.2 <= state[2] <= 1.0)
        info = {"xy_delta": xy_delta, "reward_forward": forward, "reward_ctrl": -ctrl_cost,
                "reward_contact": -contact}
        return reward, not healthy, info


class AntGoalEnv(AntTaskEnv):
    """Reach goal g: r = -‖torso_xy - g‖₁ - 0.1‖a‖² - contact; never terminates.

    `info["torso_xy"]` is the torso position the reward uses: gym's `get_body_com`, one physics
    sub-step behind `qpos[:2]` (see base.py), so it is stored rather than read from the observation.
    """

    include_xy = True
    task_space = TaskSpace("ant-goal", (-10.0, -10.0), (10.0, 10.0), ant_goal_tasks)

    def _after_step(self, before, ctrl, obs):
        torso_xy = self.body_com("torso")[:2]
        goal_reward = -float(np.sum(np.abs(torso_xy - self.task)))
        ctrl_cost = 0.1 * float(np.sum(np.square(ctrl)))
        contact = self._contact_cost()
        info = {"torso_xy": torso_xy, "reward_goal": goal_reward, "reward_ctrl": -ctrl_cost,
                "reward_contact": -contact}
        return goal_reward - ctrl_cost - contact, False, info


def ant_dir_true_reward(task, obs, action, next_obs, extras) -> np.ndarray:
    theta = batch_task(task, 1)[..., 0]
    direction = np.stack((np.cos(theta), np.sin(theta)), axis=-1)
    forward = np.sum(np.asarray(extras["xy_delta"], np.float64) / DT * direction, axis=-1)
    ctrl = rescale_action(action, CTRL_LOW, CTRL_HIGH)
    return forward - 0.5 * np.sum(np.square(ctrl), axis=-1) - contact_cost(next_obs) + 1.0


def ant_goal_true_reward(task, obs, action, next_obs, extras) -> np.ndarray:
    goal = batch_task(task, 2)
    distance = np.sum(np.abs(np.asarray(extras["torso_xy"], np.float64) - goal), axis=-1)
    ctrl = rescale_action(action, CTRL_LOW, CTRL_HIGH)
    return -distance - 0.1 * np.sum(np.square(ctrl), axis=-1) - contact_cost(next_obs)


_CONTACT_NOTE = ("Contact-force dims (last 84) and contact cost are 0 unless "
                 "make_env(task, contact_forces=True), as in the authors' MuJoCo 2.0 runs.")


def ant_dir() -> Family:
    splits = direction_tasks()
    return Family(
        name="ant-dir", obs_dim=111, act_dim=8, horizon=HORIZON,
        train_tasks=splits.train, test_tasks=splits.test, ood_tasks=splits.ood,
        make_env=AntDirEnv,
        true_reward=ant_dir_true_reward, extras=("xy_delta",), view=xy_from("xy_delta", "directions"),
        notes="Task: direction θ (rad). Obs: qpos[2:] (13) + qvel (14) + clipped cfrc_ext (84). "
              + _CONTACT_NOTE)


def ant_goal() -> Family:
    splits = ant_goal_tasks()
    return Family(
        name="ant-goal", obs_dim=113, act_dim=8, horizon=HORIZON,
        train_tasks=splits.train, test_tasks=splits.test, ood_tasks=splits.ood,
        make_env=AntGoalEnv,
        true_reward=ant_goal_true_reward, extras=("torso_xy",),
        view=StateView(lambda obs, extras, starts: np.asarray(extras["torso_xy"]), ("torso x", "torso y"), "points"),
        notes="Task: goal (x, y). Obs: qpos (15) + qvel (14) + clipped cfrc_ext (84); L1 goal "
              "reward. " + _CONTACT_NOTE)
