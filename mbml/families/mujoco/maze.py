"""UmazeGoal-M (spec §1.2): the D4RL point mass in the U maze, reaching a hidden target.

The MJCF is generated here as D4RL's `point_maze` generates it (not gymnasium-robotics'
PointMaze, whose geometry and scaling differ; spec §1.3 item 5). Coordinates: the particle's body
sits at world (1.2, 1.2), so qpos = world − 1.2, and wall cell (row w, column h) is a unit box
centred at world (w + 1, h + 1). Targets are in qpos coordinates.
"""

from __future__ import annotations

from typing import Any

import mujoco
import numpy as np

from mbml.families.base import Family
from mbml.families.mujoco.base import MujocoTaskEnv
from mbml.families.mujoco.tasks import TaskSpace, batch_task, umaze_tasks

U_MAZE = ("#####", "#GOO#", "###O#", "#OOO#", "#####")  # rows w, columns h; 'G' is unused
PARTICLE_ORIGIN = 1.2  # world position of qpos (0, 0) on both axes
RESET_CELL = (2.0, 3.0)  # the corridor joining the two arms, in qpos coordinates
HORIZON = 300
MAX_SPEED = 5.0


def maze_xml(layout: tuple[str, ...] = U_MAZE) -> str:
    """D4RL `point_maze(maze_str)`: Euler at 0.01 s, no gravity, 20 solver iterations,
    joint damping 1, a 0.1 m sphere (density 1000) on two slide joints, motors with gear 100."""
    walls = "\n".join(
        f'    <geom name="wall_{w}_{h}" type="box" pos="{w + 1.0} {h + 1.0} 0" size="0.5 0.5 0.2" '
        f'conaffinity="1" rgba=".7 .5 .3 1"/>'
        for w, row in enumerate(layout) for h, cell in enumerate(row) if cell == "#")
    return f"""<mujoco model="point_maze">
  <compiler inertiafromgeom="true" angle="radian"/>
  <option timestep="0.01" gravity="0 0 0" iterations="20" integrator="Euler"/>
  <default>
    <joint damping="1" limited="false"/>
    <geom friction=".5 .1 .1" density="1000" margin="0.002" condim="1" contype="2" conaffinity="1"/>
  </default>
  <worldbody>
    <geom name="ground" size="40 40 0.25" pos="0 0 -0.1" type="plane" contype="1" conaffinity="0"
          rgba=".2 .3 .4 1"/>
    <body name="particle" pos="{PARTICLE_ORIGIN} {PARTICLE_ORIGIN} 0">
      <geom name="particle_geom" type="sphere" size="0.1" rgba="0 0 1 1" contype="1"/>
      <joint name="ball_x" type="slide" pos="0 0 0" axis="1 0 0"/>
      <joint name="ball_y" type="slide" pos="0 0 0" axis="0 1 0"/>
    </body>
    <body name="target" mocap="true" pos="0 0 0">
      <site name="target_site" pos="0 0 0" size="0.2" rgba=".6 .3 .3 1"/>
    </body>
{walls}
  </worldbody>
  <actuator>
    <motor joint="ball_x" ctrlrange="-1 1" ctrllimited="true" gear="100"/>
    <motor joint="ball_y" ctrlrange="-1 1" ctrllimited="true" gear="100"/>
  </actuator>
</mujoco>"""


class UmazeGoalEnv(MujocoTaskEnv):
    """r = exp(-‖qpos - target‖₂) after the step; never terminates; the target is not observed.

    Before every step qvel is clipped to ±5 (D4RL `clip_velocity`). Reset: qpos = (2, 3) +
    U(-0.1, 0.1), qvel = 0.1·N(0, 1). Observation: qpos (2) + qvel (2).
    """

    # Targets must lie inside the maze's outer walls: interior cells 1..3 span qpos 0.3..3.3.
    task_space = TaskSpace("umaze-goal", (0.3, 0.3), (3.3, 3.3), umaze_tasks)

    def __init__(self, task: Any = None, *, render_mode: str | None = None):
        model = mujoco.MjModel.from_xml_string(maze_xml())
        self._target_body = model.body("target").id
        super().__init__(model, 1, 4, task, render_mode=render_mode)

    def _apply_task(self, task: np.ndarray) -> None:
        # Only the marker moves (D4RL's `set_marker`, here at the target's true world position). It
        # rides a mocap body, which has no geom: physics are untouched. body_pos survives resets.
        self.model.body_pos[self._target_body, :2] = task + PARTICLE_ORIGIN
        self.data.mocap_pos[0] = self.model.body_pos[self._target_body]

    def _reset_model(self) -> None:
        qpos = np.asarray(RESET_CELL) + self.np_random.uniform(-0.1, 0.1, self.model.nq)
        qvel = self.init_qvel + 0.1 * self.np_random.standard_normal(self.model.nv)
        self.set_state(qpos, qvel)

    def _observation(self) -> np.ndarray:
        return np.concatenate((self.data.qpos, self.data.qvel))

    def _before_step(self) -> None:
        self.set_state(self.data.qpos.copy(), np.clip(self.data.qvel, -MAX_SPEED, MAX_SPEED))

    def _after_step(self, before, ctrl, obs):
        distance = float(np.linalg.norm(obs[:2] - self.task))
        return float(np.exp(-distance)), False, {"distance": distance}


def umaze_goal_true_reward(task, obs, action, next_obs, extras) -> np.ndarray:
    target = batch_task(task, 2)
    return np.exp(-np.linalg.norm(np.asarray(next_obs, np.float64)[..., :2] - target, axis=-1))


def umaze_goal() -> Family:
    splits = umaze_tasks()
    return Family(
        name="umaze-goal", obs_dim=4, act_dim=2, horizon=HORIZON,
        train_tasks=splits.train, test_tasks=splits.test, ood_tasks=None,
        make_env=UmazeGoalEnv,
        true_reward=umaze_goal_true_reward, extras=(),
        notes="UmazeGoal-M. Task: target (x, y) in qpos coordinates (world − 1.2). 10 test goals "
              "(the authors' WD list has 10). Dense reward exp(-distance).")
