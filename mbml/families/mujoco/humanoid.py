"""HumanoidDir-M (spec §1.2, the authors' "humanoid-openai-dir"): walk in direction θ.

Gym Humanoid-v2 physics and observation (376 dims). The forward term keeps the authors'
1.25·(cos θ, sin θ)·Δcom / model.opt.timestep: it divides by the physics timestep (0.003) rather
than by dt (0.015), so it is 6.25 x the centre-of-mass velocity along θ.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mbml.families.base import Family, xy_from
from mbml.families.mujoco.base import MujocoTaskEnv, load_model, rescale_action
from mbml.families.mujoco.tasks import TaskSpace, batch_task, direction_tasks

FRAME_SKIP = 5
TIMESTEP = 0.003  # humanoid.xml; the forward term's divisor (not dt)
CTRL_LOW, CTRL_HIGH = -0.4, 0.4  # humanoid.xml ctrlrange of all 17 motors
CFRC_DIM = 14 * 6
HORIZON = 200


def impact_cost(next_obs: np.ndarray) -> np.ndarray:
    """min(0.5e-6·Σ cfrc_ext², 10) from the observation's last 84 (raw) dims."""
    return np.minimum(0.5e-6 * np.sum(np.square(next_obs[..., -CFRC_DIM:]), axis=-1), 10.0)


class HumanoidDirEnv(MujocoTaskEnv):
    """r = 1.25·(cos θ, sin θ)·Δcom_xy / 0.003 - 0.1‖ctrl‖² - impact + 5; terminates when the
    torso height qpos[2] leaves [1, 2].

    Observation: qpos[2:] (22) + qvel (23) + cinert (140) + cvel (84) + qfrc_actuator (23) +
    cfrc_ext (84, zero unless `contact_forces=True`). `info["com_xy_delta"]` is the step's
    displacement of the mass-weighted centre of `xipos`. Reset: qpos, qvel + U(-0.01, 0.01).
    """

    task_space = TaskSpace("humanoid-dir", (-2 * np.pi,), (2 * np.pi,), direction_tasks)

    def __init__(self, task: Any = None, *, contact_forces: bool = False,
                 render_mode: str | None = None):
        super().__init__(load_model("humanoid.xml"), FRAME_SKIP, 376, task,
                         contact_forces=contact_forces, render_mode=render_mode)
        self._mass = self.model.body_mass.copy()

    def _reset_model(self) -> None:
        c = 0.01
        qpos = self.init_qpos + self.np_random.uniform(-c, c, self.model.nq)
        qvel = self.init_qvel + self.np_random.uniform(-c, c, self.model.nv)
        self.set_state(qpos, qvel)

    def _observation(self) -> np.ndarray:
        d = self.data
        return np.concatenate((d.qpos[2:], d.qvel, d.cinert.ravel(), d.cvel.ravel(),
                               d.qfrc_actuator, self.contact_forces_obs()))

    def _com_xy(self) -> np.ndarray:
        return (self._mass @ self.data.xipos / self._mass.sum())[:2]

    def _before_step(self) -> np.ndarray:
        return self._com_xy()

    def _after_step(self, before, ctrl, obs):
        com_xy_delta = self._com_xy() - before
        theta = self.task[0]
        forward = 1.25 * float(np.dot((np.cos(theta), np.sin(theta)), com_xy_delta)) / TIMESTEP
        ctrl_cost = 0.1 * float(np.sum(np.square(self.data.ctrl)))
        cfrc = self.contact_forces_obs()
        impact = min(0.5e-6 * float(np.sum(np.square(cfrc))), 10.0)
        reward = forward - ctrl_cost - impact + 5.0
        height = self.data.qpos[2]
        info = {"com_xy_delta": com_xy_delta, "reward_forward": forward,
                "reward_ctrl": -ctrl_cost, "reward_impact": -impact}
        return reward, bool(height < 1.0 or height > 2.0), info


def humanoid_dir_true_reward(task, obs, action, next_obs, extras) -> np.ndarray:
    theta = batch_task(task, 1)[..., 0]
    direction = np.stack((np.cos(theta), np.sin(theta)), axis=-1)
    delta = np.asarray(extras["com_xy_delta"], np.float64)
    forward = 1.25 * np.sum(direction * delta, axis=-1) / TIMESTEP
    ctrl = rescale_action(action, CTRL_LOW, CTRL_HIGH)
    return forward - 0.1 * np.sum(np.square(ctrl), axis=-1) - impact_cost(next_obs) + 5.0


def humanoid_dir() -> Family:
    splits = direction_tasks()
    return Family(
        name="humanoid-dir", obs_dim=376, act_dim=17, horizon=HORIZON,
        train_tasks=splits.train, test_tasks=splits.test, ood_tasks=splits.ood,
        make_env=HumanoidDirEnv,
        true_reward=humanoid_dir_true_reward, extras=("com_xy_delta",),
        view=xy_from("com_xy_delta", "directions"),
        notes="HumanoidDir-M. Task: direction θ (rad), same values as ant-dir. Forward term "
              "1.25·Δcom/0.003 (6.25 x COM velocity), as the authors. cfrc_ext dims (last 84) and "
              "impact cost are 0 unless make_env(task, contact_forces=True).")
