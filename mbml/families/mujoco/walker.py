"""WalkerParam (spec §1.2): walker2d whose tasks change the physics, not the reward.

A task is a vector of 65 log-multiplier exponents e (layout `tasks.WALKER_GROUPS`: body_mass 8,
body_inertia 8x3, dof_damping 9, geom_friction 8x3, row-major, in model order). Setting it
writes default x 1.5^e (mass, inertia, friction) or default x 1.3^e (damping) into the compiled
model, as rand_param_envs' `set_task` did, and then recomputes the model's derived constants
with `mj_setConst` (which mujoco-py 0.5.7 never did). Entries multiplying zeros (the world
body's mass and inertia, the root dofs' damping) have no effect.
"""

from __future__ import annotations

from typing import Any

import mujoco
import numpy as np

from mbml.families.base import Family, velocity_from
from mbml.families.mujoco.base import MujocoTaskEnv, load_model, rescale_action
from mbml.families.mujoco.tasks import (WALKER_BASE, WALKER_GROUPS, WALKER_LIMIT,
                                        WALKER_TASK_DIM, TaskSpace, walker_param_tasks)

FRAME_SKIP = 4  # rand_param_envs' RandomEnv hard-codes 4 (the 5 passed in is swallowed)
DT = 0.004 * FRAME_SKIP
CTRL_LOW, CTRL_HIGH = -1.0, 1.0
HORIZON = 200


class WalkerParamEnv(MujocoTaskEnv):
    """r = Δx/dt + 1 - 1e-3‖a‖²; terminates unless 0.8 < z < 2 and -1 < pitch < 1.

    Observation: qpos[1:] (8) + clip(qvel, ±10) (9). Reset: qpos, qvel + U(-0.005, 0.005).
    `info["x_delta"]` is Δqpos[0] (x is not observed).
    """

    task_space = TaskSpace("walker-param", (-WALKER_LIMIT,) * WALKER_TASK_DIM,
                           (WALKER_LIMIT,) * WALKER_TASK_DIM, walker_param_tasks)

    def __init__(self, task: Any = None, *, render_mode: str | None = None):
        model = load_model("walker2d_param.xml")
        # Multipliers apply to these defaults, so tasks never compound.
        self._defaults = {name: getattr(model, name).copy() for name, _ in WALKER_GROUPS}
        self._scratch = mujoco.MjData(model)  # mj_setConst overwrites the data it is given
        super().__init__(model, FRAME_SKIP, 17, task, render_mode=render_mode)

    def _apply_task(self, task: np.ndarray) -> None:
        start = 0
        for name, size in WALKER_GROUPS:
            default = self._defaults[name]
            exponents = task[start:start + size].reshape(default.shape)
            getattr(self.model, name)[:] = default * WALKER_BASE[name] ** exponents
            start += size
        mujoco.mj_setConst(self.model, self._scratch)

    def _reset_model(self) -> None:
        noise = 0.005
        qpos = self.init_qpos + self.np_random.uniform(-noise, noise, self.model.nq)
        qvel = self.init_qvel + self.np_random.uniform(-noise, noise, self.model.nv)
        self.set_state(qpos, qvel)

    def _observation(self) -> np.ndarray:
        return np.concatenate((self.data.qpos[1:], np.clip(self.data.qvel, -10.0, 10.0)))

    def _before_step(self) -> float:
        return float(self.data.qpos[0])

    def _after_step(self, before, ctrl, obs):
        x_delta = float(self.data.qpos[0]) - before
        velocity = x_delta / self.dt
        reward = velocity + 1.0 - 1e-3 * float(np.sum(np.square(ctrl)))
        height, pitch = self.data.qpos[1], self.data.qpos[2]
        healthy = 0.8 < height < 2.0 and -1.0 < pitch < 1.0
        return reward, not healthy, {"x_delta": x_delta, "velocity": velocity}


def walker_param_true_reward(task, obs, action, next_obs, extras) -> np.ndarray:
    """The reward does not depend on the task (only the dynamics do)."""
    ctrl = rescale_action(action, CTRL_LOW, CTRL_HIGH)
    velocity = np.asarray(extras["x_delta"], np.float64) / DT
    return velocity + 1.0 - 1e-3 * np.sum(np.square(ctrl), axis=-1)


def walker_param() -> Family:
    splits = walker_param_tasks()
    return Family(
        name="walker-param", obs_dim=17, act_dim=6, horizon=HORIZON,
        train_tasks=splits.train, test_tasks=splits.test, ood_tasks=splits.ood,
        make_env=WalkerParamEnv,
        true_reward=walker_param_true_reward, extras=("x_delta",), dynamics_differ=True,
        view=velocity_from("x_delta", DT),
        notes="Task: 65 exponents e (body_mass 8 | body_inertia 8x3 | dof_damping 9 | "
              "geom_friction 8x3); params = default x 1.5^e (damping 1.3^e). Our seeded generator "
              "(seed 1337), not the authors' pickle. Timestep 0.004, RK4, frame skip 4.")
