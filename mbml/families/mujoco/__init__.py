"""The six MuJoCo task families of the paper (spec §1), as gymnasium environments.

Importing this package registers `mbml/AntDir-v0`, `mbml/AntGoal-v0`, `mbml/HalfCheetahVel-v0`,
`mbml/HumanoidDir-v0`, `mbml/WalkerParam-v0` and `mbml/UmazeGoal-v0` with the family's horizon as
`max_episode_steps`; e.g. `gymnasium.make("mbml/AntDir-v0", task="test:3")`. Without importing it
first, use `gymnasium.make("mbml.families.mujoco:mbml/AntDir-v0", ...)`.
"""

from __future__ import annotations

import gymnasium

from mbml.families.mujoco.ant import ant_dir, ant_goal
from mbml.families.mujoco.cheetah import halfcheetah_vel
from mbml.families.mujoco.humanoid import humanoid_dir
from mbml.families.mujoco.maze import umaze_goal
from mbml.families.mujoco.walker import walker_param

# gym id -> (entry point, horizon)
ENV_IDS: dict[str, tuple[str, int]] = {
    "mbml/AntDir-v0": ("mbml.families.mujoco.ant:AntDirEnv", 200),
    "mbml/AntGoal-v0": ("mbml.families.mujoco.ant:AntGoalEnv", 200),
    "mbml/HalfCheetahVel-v0": ("mbml.families.mujoco.cheetah:HalfCheetahVelEnv", 1000),
    "mbml/HumanoidDir-v0": ("mbml.families.mujoco.humanoid:HumanoidDirEnv", 200),
    "mbml/WalkerParam-v0": ("mbml.families.mujoco.walker:WalkerParamEnv", 200),
    "mbml/UmazeGoal-v0": ("mbml.families.mujoco.maze:UmazeGoalEnv", 300),
}

for _id, (_entry, _horizon) in ENV_IDS.items():
    if _id not in gymnasium.registry:
        gymnasium.register(id=_id, entry_point=_entry, max_episode_steps=_horizon)

__all__ = ["ENV_IDS", "ant_dir", "ant_goal", "halfcheetah_vel", "humanoid_dir", "umaze_goal",
           "walker_param"]
