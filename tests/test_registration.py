"""`import mbml` registers every family's gymnasium id with string entry points, and stays light:
neither MuJoCo nor JAX is imported until an environment is made. Fresh interpreters, so that no
other test's imports count."""

from __future__ import annotations

import json
import subprocess
import sys

from mbml.registration import ENV_IDS

MUJOCO_IDS = ["mbml/AntDir-v0", "mbml/AntGoal-v0", "mbml/HalfCheetahVel-v0", "mbml/HumanoidDir-v0",
              "mbml/WalkerParam-v0", "mbml/UmazeGoal-v0"]


def python(code: str) -> str:
    """Run `code` in a fresh interpreter (warnings are errors: a re-registration warns); its stdout."""
    p = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_register_envs_then_make_in_a_fresh_process():
    out = python("import gymnasium as g, mbml; g.register_envs(mbml); a = g.make('mbml/AntDir-v0'); "
                 "p = g.make('mbml/PointNav-v0', task=(0.0, 1.0)); p.reset(seed=0); "
                 "print(type(a.unwrapped).__name__, a.spec.max_episode_steps, type(p.unwrapped).__name__, "
                 "p.spec.max_episode_steps, p.step([1.0, 1.0])[1])")
    ant, ant_horizon, point, point_horizon, reward = out.split()
    assert (ant, ant_horizon, point, point_horizon) == ("AntDirEnv", "200", "PointNavEnv", "20")
    assert abs(float(reward) + (0.1 ** 2 + 0.9 ** 2) ** 0.5) < 1e-6  # one step towards the goal (0, 1)


LOADED_AND_LISTED = """
import json, sys
import gymnasium, mbml
ours = [s for s in gymnasium.registry.values() if s.namespace == "mbml"]
print(json.dumps({
    "loaded": sorted(m for m in ("mujoco", "jax", "jaxlib", "flax") if m in sys.modules),
    "ids": sorted(s.id for s in ours),
    "entry_points": sorted({type(s.entry_point).__name__ for s in ours}),
    "listed": gymnasium.pprint_registry(disable_print=True).split("===== mbml =====")[1].split(),
}))
"""


def test_import_mbml_loads_neither_mujoco_nor_jax_and_lists_every_id():
    got = json.loads(python(LOADED_AND_LISTED))
    assert got["loaded"] == []
    assert got["ids"] == sorted(["mbml/PointNav-v0", *MUJOCO_IDS]) == sorted(ENV_IDS)
    assert got["entry_points"] == ["str"]
    assert sorted(got["listed"]) == got["ids"]  # pprint_registry's `mbml` section holds exactly these


def test_registered_horizons_are_the_families():
    from mbml.families import get_family

    names = {"mbml/PointNav-v0": "point-nav", "mbml/AntDir-v0": "ant-dir", "mbml/AntGoal-v0": "ant-goal",
             "mbml/HalfCheetahVel-v0": "halfcheetah-vel", "mbml/HumanoidDir-v0": "humanoid-dir",
             "mbml/WalkerParam-v0": "walker-param", "mbml/UmazeGoal-v0": "umaze-goal"}
    assert set(names) == set(ENV_IDS)
    for env_id, name in names.items():
        family = get_family(name)
        assert ENV_IDS[env_id][1] == family.horizon, env_id
        cls = ENV_IDS[env_id][0].split(":")[1]
        assert type(family.make_env(family.train_tasks[0])).__name__ == cls, env_id
