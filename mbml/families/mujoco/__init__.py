"""The six MuJoCo task families of the paper (spec §1), as gymnasium environments.

`import mbml` registers `mbml/AntDir-v0`, `mbml/AntGoal-v0`, `mbml/HalfCheetahVel-v0`,
`mbml/HumanoidDir-v0`, `mbml/WalkerParam-v0` and `mbml/UmazeGoal-v0` with the family's horizon as
`max_episode_steps` (`mbml.registration`); e.g. `gymnasium.make("mbml/AntDir-v0", task="test:3")`.
"""

from __future__ import annotations

from mbml.families.mujoco.ant import ant_dir, ant_goal
from mbml.families.mujoco.cheetah import halfcheetah_vel
from mbml.families.mujoco.humanoid import humanoid_dir
from mbml.families.mujoco.maze import umaze_goal
from mbml.families.mujoco.walker import walker_param
from mbml.registration import ENV_IDS as _ALL_IDS

# gym id -> (entry point, horizon) of the MuJoCo families (registered by `import mbml`)
ENV_IDS: dict[str, tuple[str, int]] = {i: v for i, v in _ALL_IDS.items() if v[0].startswith(__name__ + ".")}

__all__ = ["ENV_IDS", "ant_dir", "ant_goal", "halfcheetah_vel", "humanoid_dir", "umaze_goal",
           "walker_param"]
