"""HalfCheetahVel (spec §1.2): run at a target forward velocity, gym HalfCheetah-v2 physics."""

from __future__ import annotations

from typing import Any

import mujoco
import numpy as np

from mbml.families.base import Family, velocity_from
from mbml.families.mujoco.base import MujocoTaskEnv, load_model, rescale_action
from mbml.families.mujoco.tasks import TaskSpace, batch_task, cheetah_vel_tasks

FRAME_SKIP = 5
DT = 0.01 * FRAME_SKIP
CTRL_LOW, CTRL_HIGH = -1.0, 1.0
HORIZON = 1000
TOTAL_MASS = 14.0  # the XML's settotalmass, applied after compiling (see assets/half_cheetah.xml)


def _cheetah_model() -> mujoco.MjModel:
    model = load_model("half_cheetah.xml")
    mujoco.mj_setTotalmass(model, TOTAL_MASS)
    mujoco.mj_setConst(model, mujoco.MjData(model))
    return model


class HalfCheetahVelEnv(MujocoTaskEnv):
    """r = -|v_x - v_goal| - 0.05‖a‖², v_x = Δqpos[0] / dt; never terminates.

    Observation (float32, as the authors cast it): qpos[1:] (8) + qvel (9) + torso body position
    (3, absolute x included). `info["x_delta"]` is Δqpos[0]: the float32 observation would lose
    the velocity to cancellation once x is large. Reset: qpos + U(-0.1, 0.1), qvel + 0.1·N(0, 1).
    """

    task_space = TaskSpace("halfcheetah-vel", (-10.0,), (10.0,), cheetah_vel_tasks)

    def __init__(self, task: Any = None, *, render_mode: str | None = None):
        super().__init__(_cheetah_model(), FRAME_SKIP, 20, task, obs_dtype=np.float32,
                         render_mode=render_mode)

    def _reset_model(self) -> None:
        qpos = self.init_qpos + self.np_random.uniform(-0.1, 0.1, self.model.nq)
        qvel = self.init_qvel + 0.1 * self.np_random.standard_normal(self.model.nv)
        self.set_state(qpos, qvel)

    def _observation(self) -> np.ndarray:
        return np.concatenate((self.data.qpos[1:], self.data.qvel,
                               self.body_com("torso"))).astype(np.float32)

    def _before_step(self) -> float:
        return float(self.data.qpos[0])

    def _after_step(self, before, ctrl, obs):
        x_delta = float(self.data.qpos[0]) - before
        velocity = x_delta / self.dt
        forward = -abs(velocity - self.task[0])
        ctrl_cost = 0.05 * float(np.sum(np.square(ctrl)))
        info = {"x_delta": x_delta, "velocity": velocity, "reward_forward": forward,
                "reward_ctrl": -ctrl_cost}
        return forward - ctrl_cost, False, info


def halfcheetah_vel_true_reward(task, obs, action, next_obs, extras) -> np.ndarray:
    target = batch_task(task, 1)[..., 0]
    velocity = np.asarray(extras["x_delta"], np.float64) / DT
    ctrl = rescale_action(action, CTRL_LOW, CTRL_HIGH)
    return -np.abs(velocity - target) - 0.05 * np.sum(np.square(ctrl), axis=-1)


def halfcheetah_vel() -> Family:
    splits = cheetah_vel_tasks()
    return Family(
        name="halfcheetah-vel", obs_dim=20, act_dim=6, horizon=HORIZON,
        train_tasks=splits.train, test_tasks=splits.test, ood_tasks=splits.ood,
        make_env=HalfCheetahVelEnv,
        true_reward=halfcheetah_vel_true_reward, extras=("x_delta",),
        view=velocity_from("x_delta", DT, "values"),
        notes="Task: target velocity (m/s). Obs float32: qpos[1:] (8) + qvel (9) + torso xyz (3).")
