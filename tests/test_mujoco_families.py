"""The six MuJoCo task families against spec §1: sizes, rewards, termination, task values,
determinism, the gymnasium checker, `true_reward` consistency and bad input."""

from __future__ import annotations

import os
import warnings

import gymnasium
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from mbml.errors import MbmlError
from mbml.families import get_family
from mbml.families.mujoco import ENV_IDS
from mbml.families.mujoco.base import load_model
from mbml.families.mujoco.tasks import WALKER_GROUPS, walker_param_tasks

# name -> (obs_dim, act_dim, horizon, gym id)
FAMILIES = {
    "ant-dir": (111, 8, 200, "mbml/AntDir-v0"),
    "ant-goal": (113, 8, 200, "mbml/AntGoal-v0"),
    "halfcheetah-vel": (20, 6, 1000, "mbml/HalfCheetahVel-v0"),
    "humanoid-dir": (376, 17, 200, "mbml/HumanoidDir-v0"),
    "walker-param": (17, 6, 200, "mbml/WalkerParam-v0"),
    "umaze-goal": (4, 2, 300, "mbml/UmazeGoal-v0"),
}
NAMES = list(FAMILIES)


def rollout(env, seed: int, steps: int, extras: tuple[str, ...], action_seed: int = 0):
    """Random-action transitions (stops at termination): obs, actions, next_obs, rewards, extras."""
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(action_seed)
    o, a, o2, r, ex = [], [], [], [], {k: [] for k in extras}
    for _ in range(steps):
        act = rng.uniform(-1.2, 1.2, env.action_space.shape).astype(np.float32)  # some clipped
        nxt, rew, terminated, truncated, info = env.step(act)
        assert truncated is False
        o.append(obs), a.append(act), o2.append(nxt), r.append(rew)
        for k in extras:
            ex[k].append(info[k])
        obs = nxt
        if terminated:
            break
    return (np.array(o), np.array(a), np.array(o2), np.array(r),
            {k: np.array(v) for k, v in ex.items()})


def set_state(env, qpos, qvel=None):
    u = env.unwrapped
    u.set_state(np.asarray(qpos, float), u.init_qvel if qvel is None else np.asarray(qvel, float))


# -- task values -------------------------------------------------------------------------------
SPEC_DIR_TRAIN = [1.2348, 0.7478, 1.5127, 1.8203, 0.5893, 2.0886, 1.7024, 0.8850, 1.9469, 0.9387]
SPEC_DIR_TRAIN_DEG = [70.7, 42.8, 86.7, 104.3, 33.8, 119.7, 97.5, 50.7, 111.5, 53.8]
SPEC_DIR_TEST = [0.8910, 1.0556, 1.0691, 0.0331, 1.5324, 2.0804, 0.3411, 0.2652]
SPEC_GOAL_TRAIN = [(1.591, 0.973), (2.248, 0.776), (0.886, 0.584), (1.701, 2.441), (1.563, 1.244),
                   (1.243, 2.358), (2.281, 1.394), (-0.822, 1.605), (0.070, 1.934), (2.227, 0.548)]
SPEC_GOAL_TEST = [(-0.047, 2.187), (2.528, 1.049), (1.063, 0.733), (0.488, 2.894), (0.980, 1.694),
                  (1.983, 0.778), (1.390, 1.632), (0.345, 0.153)]
SPEC_VEL_TRAIN = [0.689, 0.778, 1.099, 1.184, 1.191, 0.542, 1.005, 0.749, 1.249, 1.436]
SPEC_VEL_TEST = [0.925, 1.004, 1.010, 0.516, 1.232, 1.493, 0.663, 0.627]
SPEC_MAZE_TRAIN = [(1.017, 1.542), (0.447, 1.362), (0.963, 1.660), (0.972, 1.680), (0.498, 1.571),
                   (2.436, 1.164), (2.912, 1.255), (2.794, 1.300), (3.003, 1.501), (2.799, 1.376)]


def close_to_printed(values, printed, decimals):
    np.testing.assert_allclose(values, printed, rtol=0, atol=0.5 * 10.0 ** -decimals + 1e-12)


@pytest.mark.parametrize("name", ["ant-dir", "humanoid-dir"])
def test_direction_tasks_match_spec(name):
    f = get_family(name)
    close_to_printed(f.train_tasks[:, 0], SPEC_DIR_TRAIN, 4)
    close_to_printed(np.degrees(f.train_tasks[:, 0]), SPEC_DIR_TRAIN_DEG, 1)
    close_to_printed(f.test_tasks[:, 0], SPEC_DIR_TEST, 4)
    ood_deg = np.degrees(f.ood_tasks[:, 0])
    assert f.ood_tasks.shape == (8, 1) and round(ood_deg.min()) == 120 and round(ood_deg.max()) == 167


def test_goal_velocity_and_maze_tasks_match_spec():
    ant = get_family("ant-goal")
    close_to_printed(ant.train_tasks, SPEC_GOAL_TRAIN, 3)
    close_to_printed(ant.test_tasks, SPEC_GOAL_TEST, 3)
    angle = np.arctan2(ant.ood_tasks[:, 1], ant.ood_tasks[:, 0])
    assert ant.ood_tasks.shape == (8, 2) and np.all((angle >= 2 * np.pi / 3) & (angle <= np.pi))
    assert np.all(np.linalg.norm(ant.ood_tasks, axis=1) <= 3)
    hcv = get_family("halfcheetah-vel")
    close_to_printed(hcv.train_tasks[:, 0], SPEC_VEL_TRAIN, 3)
    close_to_printed(hcv.test_tasks[:, 0], SPEC_VEL_TEST, 3)
    assert np.all((hcv.ood_tasks >= 1.5) & (hcv.ood_tasks <= 2.5))
    maze = get_family("umaze-goal")
    close_to_printed(maze.train_tasks, SPEC_MAZE_TRAIN, 3)
    assert maze.test_tasks.shape == (10, 2) and maze.ood_tasks is None
    x = maze.test_tasks[:, 0]
    assert np.all((x[:5] >= 0.4) & (x[:5] <= 1.2)) and np.all((x[5:] >= 2.4) & (x[5:] <= 3.2))


def test_walker_tasks_follow_the_documented_law():
    splits = walker_param_tasks()
    assert splits.train.shape == (30, 65) and splits.test.shape == (8, 65)
    assert splits.ood.shape == (8, 65)
    assert np.abs(splits.train).max() <= 2 and np.abs(splits.test).max() <= 2
    assert np.all((np.abs(splits.ood) >= 2) & (np.abs(splits.ood) <= 3))
    start = 0
    for _, size in WALKER_GROUPS:  # one sign per task and parameter group
        group = np.sign(splits.ood[:, start:start + size])
        assert np.all(group == group[:, :1])
        start += size
    np.testing.assert_array_equal(walker_param_tasks().train, splits.train)


def test_generators_leave_numpy_global_state_alone():
    np.random.seed(5)
    expected = np.random.random_sample()
    np.random.seed(5)
    for name in NAMES:
        get_family(name)
    assert np.random.random_sample() == expected


@pytest.mark.parametrize("name", NAMES)
def test_family_fields(name):
    obs_dim, act_dim, horizon, gym_id = FAMILIES[name]
    f = get_family(name)
    assert (f.name, f.obs_dim, f.act_dim, f.horizon) == (name, obs_dim, act_dim, horizon)
    num_train = 30 if name == "walker-param" else 10
    assert f.train_tasks.shape[0] == num_train and f.train_tasks.dtype == np.float64
    assert f.test_tasks.shape[0] == (10 if name == "umaze-goal" else 8)
    assert f.dynamics_differ == (name == "walker-param")
    assert f.oracle is None and f.jax_env is None and f.true_reward is not None
    assert ENV_IDS[gym_id][1] == horizon


# -- environments ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_env_checker_and_registered_id(name):
    obs_dim, act_dim, horizon, gym_id = FAMILIES[name]
    f = get_family(name)
    env = f.make_env(f.test_tasks[0])
    assert env.observation_space.shape == (obs_dim,) and env.action_space.shape == (act_dim,)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gymnasium warns about infinite Box bounds, as for its own envs
        check_env(env, skip_render_check=True)
        made = gymnasium.make(gym_id, task="test:1")
    assert made.spec.max_episode_steps == horizon
    np.testing.assert_array_equal(made.unwrapped.task, f.test_tasks[1])
    obs, _ = made.reset(seed=0)
    assert obs.shape == (obs_dim,) and obs.dtype == env.observation_space.dtype


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_actions_same_observations(name):
    f = get_family(name)
    task = f.train_tasks[2]
    first = rollout(f.make_env(task), seed=3, steps=30, extras=f.extras)
    second = rollout(f.make_env(task), seed=3, steps=30, extras=f.extras)
    np.testing.assert_array_equal(first[2], second[2])
    np.testing.assert_array_equal(first[3], second[3])
    other = rollout(f.make_env(task), seed=4, steps=30, extras=f.extras)
    assert not np.array_equal(first[0][0], other[0][0])  # the seed does reach the reset noise


@pytest.mark.parametrize("name", NAMES)
def test_true_reward_matches_env_reward(name):
    """A recorded step's reward equals `true_reward`, under a task set after construction, and a
    reward-only family's transitions relabelled with another task equal that task's env reward."""
    f = get_family(name)
    env = f.make_env(f.train_tasks[0])
    env.set_task(f.test_tasks[3])
    obs, act, nxt, rew, extras = rollout(env, seed=1, steps=25, extras=f.extras)
    np.testing.assert_allclose(f.true_reward(f.test_tasks[3], obs, act, nxt, extras), rew,
                               rtol=1e-10, atol=1e-10)
    if not f.dynamics_differ:
        env.set_task(f.train_tasks[5])
        replay = rollout(env, seed=1, steps=25, extras=f.extras)
        n = min(len(rew), len(replay[3]))
        np.testing.assert_array_equal(replay[2][:n], nxt[:n])
        relabelled = f.true_reward(f.train_tasks[5], obs, act, nxt, extras)
        np.testing.assert_allclose(relabelled[:n], replay[3][:n], rtol=1e-10, atol=1e-10)
    per_row_task = np.repeat(f.test_tasks[3][None], len(rew), axis=0)  # [N, P] tasks broadcast too
    np.testing.assert_allclose(f.true_reward(per_row_task, obs, act, nxt, extras), rew, atol=1e-10)


@pytest.mark.parametrize("name", ["ant-dir", "ant-goal", "humanoid-dir"])
def test_contact_forces_are_zero_unless_asked(name):
    f = get_family(name)
    quiet = rollout(f.make_env(f.train_tasks[0]), seed=0, steps=15, extras=f.extras)
    assert not quiet[2][:, -84:].any()
    env = f.make_env(f.train_tasks[0], contact_forces=True)
    obs, act, nxt, rew, extras = rollout(env, seed=0, steps=15, extras=f.extras)
    assert nxt[:, -84:].any()
    np.testing.assert_allclose(f.true_reward(f.train_tasks[0], obs, act, nxt, extras), rew,
                               atol=1e-10)


# -- hand-computed steps -----------------------------------------------------------------------
def test_ant_dir_reward_by_hand():
    env = get_family("ant-dir").make_env([np.pi / 2])  # straight along +y
    env.reset(seed=0)
    data = env.unwrapped.data
    before = data.body("torso").xpos.copy()
    _, reward, terminated, _, _ = env.step(np.full(8, 0.5, np.float32))
    dy = data.body("torso").xpos[1] - before[1]
    # forward = Δy / 0.05 (cos 90° kills Δx up to rounding); ctrl 0.5·8·0.25; survive 1
    assert reward == pytest.approx(dy / 0.05 - 1.0 + 1.0, abs=1e-9) and not terminated


def test_ant_goal_reward_by_hand():
    env = get_family("ant-goal").make_env([2.0, -1.0])
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step(np.ones(8, np.float32))
    x, y = env.unwrapped.data.body("torso").xpos[:2]
    assert reward == pytest.approx(-(abs(x - 2.0) + abs(y + 1.0)) - 0.1 * 8, abs=1e-12)
    assert not terminated and np.allclose(info["torso_xy"], (x, y))


def test_halfcheetah_vel_reward_by_hand():
    env = get_family("halfcheetah-vel").make_env([1.0])
    env.reset(seed=0)
    x0 = env.unwrapped.data.qpos[0]
    _, reward, terminated, _, _ = env.step(np.full(6, -0.5, np.float32))
    v = (env.unwrapped.data.qpos[0] - x0) / 0.05
    assert reward == pytest.approx(-abs(v - 1.0) - 0.05 * 6 * 0.25, abs=1e-12) and not terminated


def test_humanoid_dir_reward_by_hand():
    env = get_family("humanoid-dir").make_env([0.0])  # along +x
    env.reset(seed=0)
    m, data = env.unwrapped.model, env.unwrapped.data
    com_x = lambda: float(m.body_mass @ data.xipos[:, 0] / m.body_mass.sum())  # noqa: E731
    before = com_x()
    _, reward, terminated, _, _ = env.step(np.ones(17, np.float32))
    # 6.25 x COM velocity (dt 0.015), ctrl = 0.4 on 17 motors, alive 5
    velocity = (com_x() - before) / 0.015
    assert reward == pytest.approx(6.25 * velocity - 0.1 * 17 * 0.16 + 5.0, abs=1e-9)
    assert not terminated


def test_walker_reward_by_hand():
    env = get_family("walker-param").make_env("test:0")
    env.reset(seed=0)
    x0 = env.unwrapped.data.qpos[0]
    _, reward, terminated, _, _ = env.step(np.zeros(6, np.float32))
    assert reward == pytest.approx((env.unwrapped.data.qpos[0] - x0) / 0.016 + 1.0, abs=1e-12)
    assert not terminated


def test_umaze_reward_by_hand_and_velocity_clip():
    env = get_family("umaze-goal").make_env([0.6, 1.5])
    env.reset(seed=0)
    set_state(env, [0.9, 1.9], [0.0, 0.0])  # 0.3, 0.4 away in the upper arm, at rest: stays there
    obs, reward, terminated, _, _ = env.step(np.zeros(2, np.float32))
    assert reward == pytest.approx(np.exp(-0.5), abs=1e-12) and not terminated
    set_state(env, [2.0, 3.0], [40.0, -40.0])
    obs, *_ = env.step(np.zeros(2, np.float32))
    assert np.all(np.abs(obs[2:]) <= 5.0)  # clipped to ±5 before the step, then damped
    assert np.allclose(obs[:2], [2.05, 2.95], atol=0.01)  # moved ≈ 5 m/s · 0.01 s, not 40


# -- termination -------------------------------------------------------------------------------
def test_termination_rules():
    cases = [  # (family, qpos edit, terminated)
        ("ant-dir", {2: 1.2}, True), ("ant-dir", {}, False),
        ("ant-goal", {2: 1.2}, False),
        ("humanoid-dir", {2: 0.8}, True), ("humanoid-dir", {}, False),
        ("walker-param", {2: 1.2}, True), ("walker-param", {1: 0.7}, True),
        ("walker-param", {}, False),
        ("halfcheetah-vel", {2: 3.0}, False),
    ]
    for name, edit, expected in cases:
        env = get_family(name).make_env("train:0")
        env.reset(seed=0)
        qpos = env.unwrapped.data.qpos.copy()
        for i, value in edit.items():
            qpos[i] = value
        set_state(env, qpos)
        terminated = env.step(np.zeros(env.action_space.shape, np.float32))[2]
        assert terminated is expected, (name, edit)


# -- simulator constants -----------------------------------------------------------------------
def test_simulator_constants_match_spec():
    expected = {  # name: (nq, nv, nu, nbody, timestep, dt, ctrl limit)
        "ant-dir": (15, 14, 8, 14, 0.01, 0.05, 1.0),
        "halfcheetah-vel": (9, 9, 6, 8, 0.01, 0.05, 1.0),
        "humanoid-dir": (24, 23, 17, 14, 0.003, 0.015, 0.4),
        "walker-param": (9, 9, 6, 8, 0.004, 0.016, 1.0),
        "umaze-goal": (2, 2, 2, 3, 0.01, 0.01, 1.0),  # + the target marker's mocap body
    }
    for name, (nq, nv, nu, nbody, timestep, dt, limit) in expected.items():
        env = get_family(name).make_env("train:0")
        m = env.model
        assert (m.nq, m.nv, m.nu, m.nbody) == (nq, nv, nu, nbody), name
        assert m.opt.timestep == timestep and env.dt == pytest.approx(dt), name
        assert np.all(m.actuator_ctrlrange == [-limit, limit]), name
    cheetah = get_family("halfcheetah-vel").make_env("train:0").model
    assert cheetah.body_mass.sum() == pytest.approx(14.0)
    maze = get_family("umaze-goal").make_env("train:0").model
    assert maze.opt.integrator == mujoco.mjtIntegrator.mjINT_EULER and not maze.opt.gravity.any()
    assert maze.opt.iterations == 20 and np.all(maze.dof_damping == 1.0)
    assert np.all(maze.actuator_gear[:, 0] == 100) and maze.geom("particle_geom").size[0] == 0.1
    assert sum(1 for i in range(maze.ngeom) if maze.geom(i).name.startswith("wall_")) == 18


def test_walker_model_is_the_original_in_local_coordinates():
    """Same masses, inertias and joint anchors as gymnasium's local conversion of the same
    global-coordinate walker (feet 0.9 / 1.9), with timestep 0.004 and RK4."""
    ours = load_model("walker2d_param.xml")
    path = os.path.join(os.path.dirname(gymnasium.__file__), "envs/mujoco/assets/walker2d.xml")
    if not os.path.exists(path):
        pytest.skip("gymnasium's walker2d.xml is not installed")
    ref = mujoco.MjModel.from_xml_path(path)
    assert ours.opt.timestep == 0.004 and ours.opt.integrator == mujoco.mjtIntegrator.mjINT_RK4
    for field in ("body_mass", "body_inertia", "dof_damping", "dof_armature", "jnt_range",
                  "geom_friction", "geom_size"):
        np.testing.assert_allclose(getattr(ours, field), getattr(ref, field), atol=1e-12)
    assert ours.geom("foot_geom").friction[0] == 0.9
    assert ours.geom("foot_left_geom").friction[0] == 1.9
    d_ours, d_ref = mujoco.MjData(ours), mujoco.MjData(ref)
    mujoco.mj_forward(ours, d_ours), mujoco.mj_forward(ref, d_ref)
    np.testing.assert_allclose(d_ours.xanchor[2:], d_ref.xanchor[2:], atol=1e-12)  # hinges
    np.testing.assert_allclose(d_ours.geom_xpos, d_ref.geom_xpos, atol=1e-12)
    np.testing.assert_allclose(d_ours.ximat, d_ref.ximat, atol=1e-12)


def test_vendored_assets_match_gymnasium():
    root = os.path.join(os.path.dirname(gymnasium.__file__), "envs/mujoco/assets")
    for asset in ("ant.xml", "humanoid.xml"):
        if not os.path.exists(os.path.join(root, asset)):
            pytest.skip("gymnasium assets are not installed")
        ours, ref = load_model(asset), mujoco.MjModel.from_xml_path(os.path.join(root, asset))
        np.testing.assert_array_equal(ours.body_mass, ref.body_mass)
        np.testing.assert_array_equal(ours.body_inertia, ref.body_inertia)


# -- walker tasks change the physics -----------------------------------------------------------
def test_walker_task_writes_model_parameters():
    f = get_family("walker-param")
    env = f.make_env(f.train_tasks[0])
    default = load_model("walker2d_param.xml")
    task = f.ood_tasks[2]
    env.set_task(task)
    m = env.model
    np.testing.assert_allclose(m.body_mass, default.body_mass * 1.5 ** task[:8])
    np.testing.assert_allclose(m.body_inertia.ravel(), default.body_inertia.ravel() * 1.5 ** task[8:32])
    np.testing.assert_allclose(m.dof_damping, default.dof_damping * 1.3 ** task[32:41])
    np.testing.assert_allclose(m.geom_friction.ravel(), default.geom_friction.ravel() * 1.5 ** task[41:])
    assert m.body_subtreemass[1] == pytest.approx(m.body_mass[1:].sum())  # mj_setConst ran


def test_walker_trajectories_depend_only_on_task_and_seed():
    f = get_family("walker-param")
    fresh = rollout(f.make_env(f.test_tasks[1]), seed=7, steps=40, extras=f.extras)
    env = f.make_env(f.test_tasks[1])
    env.set_task(f.ood_tasks[0])
    other = rollout(env, seed=7, steps=40, extras=f.extras)
    env.set_task(f.test_tasks[1])  # back again: multipliers never compound
    again = rollout(env, seed=7, steps=40, extras=f.extras)
    np.testing.assert_array_equal(again[2], fresh[2])
    n = min(len(fresh[2]), len(other[2]))
    assert not np.array_equal(other[2][:n], fresh[2][:n])


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name, task", [
    ("ant-dir", "train:10"), ("ant-dir", "test:8"), ("ant-dir", "valid:0"), ("ant-dir", "test:-1"),
    ("ant-dir", [0.1, 0.2]), ("ant-dir", np.nan), ("ant-dir", 7.0), ("ant-dir", "abc"),
    ("ant-goal", [1.0]), ("ant-goal", [11.0, 0.0]),
    ("halfcheetah-vel", [[1.0]]), ("halfcheetah-vel", 20.0),
    ("humanoid-dir", "ood:8"),
    ("walker-param", "train:30"), ("walker-param", np.full(65, 3.5)), ("walker-param", np.zeros(64)),
    ("umaze-goal", "ood:0"), ("umaze-goal", [5.0, 1.0]), ("umaze-goal", [np.inf, 1.0]),
])
def test_bad_tasks_raise_one_line_mbml_errors(name, task):
    f = get_family(name)
    with pytest.raises(MbmlError) as info:
        f.make_env(task)
    assert "\n" not in str(info.value) and name in str(info.value)
    env = f.make_env("train:1")
    with pytest.raises(MbmlError):
        env.set_task(task)
    np.testing.assert_array_equal(env.task, f.train_tasks[1])  # a rejected task changes nothing


def test_true_reward_rejects_a_task_of_the_wrong_size():
    f = get_family("ant-goal")
    obs = np.zeros((3, 113))
    with pytest.raises(MbmlError):
        f.true_reward(np.zeros(3), obs, np.zeros((3, 8)), obs, {"torso_xy": np.zeros((3, 2))})


def test_rgb_array_render_shows_the_scene():
    """Rendering needs an OpenGL context, so it runs in a subprocess (EGL) and skips without one."""
    import subprocess
    import sys
    code = ("from mbml.families.mujoco.maze import UmazeGoalEnv\n"
            "e = UmazeGoalEnv(render_mode='rgb_array'); e.reset(seed=0)\n"
            "img = e.render(); assert img.shape == (480, 480, 3) and img.std() > 0; e.close()\n")
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=60)
    err = done.stderr.decode()
    if done.returncode != 0 and ("GL" in err or "display" in err.lower()):
        pytest.skip(f"no OpenGL rendering here: {err[-200:]}")
    assert done.returncode == 0, err[-2000:]


def test_state_views_sum_displacements_per_episode_and_give_velocities():
    """The datasets figure's views: positions restart at each episode, velocities are Δx / dt."""
    from mbml.families.base import velocity_from, xy_from

    delta = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.5, 0.5], [0.5, 0.5]])
    starts = np.array([True, False, False, True, False])
    pos = xy_from("d", "directions").points(None, {"d": delta}, starts)
    np.testing.assert_allclose(pos, [[1, 0], [2, 0], [2, 2], [0.5, 0.5], [1, 1]])
    vel = velocity_from("dx", 0.05).points(None, {"dx": np.array([0.05, -0.1])}, np.array([True, False]))
    np.testing.assert_allclose(vel, [1.0, -2.0])
    for name in FAMILIES:
        f = get_family(name)
        assert f.view.tasks in ("", "points", "directions", "values")
        if f.view.tasks == "points":
            assert f.train_tasks.shape[1] == 2, name


@pytest.mark.parametrize("name", NAMES)
def test_datasets_figure_draws_each_family_view(tmp_path, name):
    from types import SimpleNamespace

    from mbml import figures

    f = get_family(name)
    k, n = len(f.train_tasks), 50
    rng = np.random.default_rng(0)
    ends = np.zeros((k, n), bool)
    ends[:, 24] = True
    shapes = {"xy_delta": (2,), "torso_xy": (2,), "com_xy_delta": (2,), "x_delta": ()}
    ds = SimpleNamespace(num_tasks=k, observations=rng.normal(size=(k, n, f.obs_dim)).astype(np.float32),
                         terminals=np.zeros((k, n), bool), timeouts=ends, rewards=rng.normal(size=(k, n)),
                         extras={e: rng.normal(size=(k, n) + shapes[e]) * 0.05 for e in f.extras})
    run = SimpleNamespace(family=f, dataset=lambda seed: ds)
    path = figures.datasets(run, 0, tmp_path / "datasets.png")
    assert path.stat().st_size > 10_000


@pytest.mark.parametrize("name", ["point-nav", "halfcheetah-vel", "umaze-goal", "walker-param"])
def test_posteriors_figure_colours_any_task_shape(tmp_path, name):
    """Goals (2 parameters), one parameter and many (walker-param: 65) each get a colour scale."""
    import json
    from types import SimpleNamespace

    from mbml import figures

    f = get_family(name)
    t = len(f.test_tasks)
    means = np.random.default_rng(0).normal(size=(t, 6, 5)).tolist()  # [T, E+1, latent]
    for m in ("full", "neither"):
        (tmp_path / "eval").mkdir(exist_ok=True)
        (tmp_path / "eval" / f"{m}.json").write_text(json.dumps({"test": {"posterior_means": means}}))
    run = SimpleNamespace(family=f, seed_dir=lambda seed: tmp_path)
    assert figures.posteriors(run, 0, ["full", "neither"], tmp_path / "p.png").stat().st_size > 10_000
