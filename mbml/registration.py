"""The gymnasium ids of every family's environment, registered when `mbml` is imported.

Entry points are strings, so registering imports only gymnasium: `gymnasium.make` imports the
family's module (JAX for the toy, MuJoCo for the others) when it first makes that environment.
Users write `gymnasium.register_envs(mbml)`, then e.g. `gymnasium.make("mbml/AntDir-v0", task="test:3")`.
"""

from __future__ import annotations

import gymnasium

# gym id -> (entry point, horizon = max_episode_steps); tests check each horizon against its family's
ENV_IDS: dict[str, tuple[str, int]] = {
    "mbml/PointNav-v0": ("mbml.families.point_nav:PointNavEnv", 20),
    "mbml/AntDir-v0": ("mbml.families.mujoco.ant:AntDirEnv", 200),
    "mbml/AntGoal-v0": ("mbml.families.mujoco.ant:AntGoalEnv", 200),
    "mbml/HalfCheetahVel-v0": ("mbml.families.mujoco.cheetah:HalfCheetahVelEnv", 1000),
    "mbml/HumanoidDir-v0": ("mbml.families.mujoco.humanoid:HumanoidDirEnv", 200),
    "mbml/WalkerParam-v0": ("mbml.families.mujoco.walker:WalkerParamEnv", 200),
    "mbml/UmazeGoal-v0": ("mbml.families.mujoco.maze:UmazeGoalEnv", 300),
}


def register() -> None:
    """Register every id of `ENV_IDS` not yet in gymnasium's registry (a second import does nothing)."""
    for env_id, (entry_point, horizon) in ENV_IDS.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point=entry_point, max_episode_steps=horizon)
