"""point-nav, the 2-D navigation toy (paper Fig. 1): tasks, the JAX and gymnasium environments, the
reward, the oracle and the true reward used for relabelling."""

from __future__ import annotations

import math
import warnings

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from mbml import rollout
from mbml.data import Dataset
from mbml.ensembles import true_rewards
from mbml.errors import MbmlError
from mbml.families import get_family
from mbml.families import point_nav as P


@pytest.fixture(scope="module")
def fam():
    return get_family("point-nav")


def angles(goals: np.ndarray) -> np.ndarray:
    return np.arctan2(goals[:, 1], goals[:, 0])


def test_goals_on_the_upper_half_circle_and_split(fam):
    assert fam.train_tasks.shape == (10, 2) and fam.test_tasks.shape == (8, 2)
    assert (fam.obs_dim, fam.act_dim, fam.horizon) == (2, 2, 20)
    for goals in (fam.train_tasks, fam.test_tasks):
        np.testing.assert_allclose(np.linalg.norm(goals, axis=1), 1.0, rtol=1e-12)
        assert np.all(goals[:, 1] >= 0.0)
        assert np.all((angles(goals) >= 0) & (angles(goals) <= np.pi))
    train = angles(fam.train_tasks)
    assert len(np.unique(np.round(train, 6))) == 10
    # within distribution: every test goal lies between two training goals
    test = angles(fam.test_tasks)
    assert np.all((test >= train.min()) & (test <= train.max())), (test, train.min(), train.max())
    # the training goals span the half circle (one per tenth, jittered by at most 0.3 of a tenth)
    assert train.min() < 0.1 * np.pi and train.max() > 0.9 * np.pi
    # fixed by the task seed
    a, b = P.goal_angles()
    np.testing.assert_allclose(a, train, rtol=1e-12)
    np.testing.assert_allclose(np.sort(b), np.sort(test), rtol=1e-12)


def test_reward_by_hand_one_step(fam):
    # goal (0, 1), action (0.5, 1.0): p' = 0.1 * (0.5, 1.0) = (0.05, 0.1)
    # r = -||(0.05, 0.1) - (0, 1)|| = -sqrt(0.05^2 + 0.9^2) = -sqrt(0.8125) = -0.901388
    # goal (1, 0), action (3, -2) is clipped to (1, -1): p' = (0.1, -0.1), r = -sqrt(0.81 + 0.01) = -0.905539
    for task, action, pos, r in (((0.0, 1.0), (0.5, 1.0), (0.05, 0.1), -math.sqrt(0.8125)),
                                 ((1.0, 0.0), (3.0, -2.0), (0.1, -0.1), -math.sqrt(0.82))):
        state, obs = P.reset(jax.random.PRNGKey(0), jnp.array(task))
        np.testing.assert_array_equal(obs, [0.0, 0.0])
        state, obs, reward, terminal = P.step(state, jnp.array(action), jnp.array(task))
        np.testing.assert_allclose(obs, pos, rtol=1e-6)
        np.testing.assert_allclose(reward, r, rtol=1e-6)
        assert not bool(terminal)
        env = fam.make_env(np.array(task))
        env.reset(seed=0)
        o, rew, terminated, truncated, _ = env.step(np.array(action, np.float32))
        np.testing.assert_allclose(o, pos, rtol=1e-6)
        np.testing.assert_allclose(rew, r, rtol=1e-6)
        assert terminated is False and truncated is False
        np.testing.assert_allclose(P.true_reward(np.array(task), np.zeros(2), np.array(action), np.array(pos)), r,
                                   rtol=1e-6)


def test_jax_and_gymnasium_envs_give_the_same_trajectory(fam):
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1.5, 1.5, (fam.horizon, 2)).astype(np.float32)  # some clipped
    task = fam.test_tasks[3]
    step = jax.jit(fam.jax_env.step)
    state, obs_j = fam.jax_env.reset(jax.random.PRNGKey(1), jnp.asarray(task, jnp.float32))
    env = fam.make_env(task)
    obs_g, _ = env.reset(seed=1)
    np.testing.assert_allclose(obs_j, obs_g)
    for a in actions:
        state, obs_j, r_j, term_j = step(state, jnp.asarray(a), jnp.asarray(task, jnp.float32))
        obs_g, r_g, term_g, trunc_g, _ = env.step(a)
        np.testing.assert_allclose(obs_j, obs_g, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(r_j, r_g, rtol=1e-5, atol=1e-6)
        assert not bool(term_j) and term_g is False and trunc_g is False
    # and the trajectory went somewhere: 20 steps of clipped actions
    np.testing.assert_allclose(obs_g, 0.1 * np.clip(actions, -1, 1).sum(0), rtol=1e-4, atol=1e-5)


def test_registered_env_has_the_horizon_as_time_limit(fam):
    env = gym.make("mbml/PointNav-v0", task=tuple(fam.train_tasks[0]))
    env.reset(seed=0)
    for t in range(fam.horizon):
        _, _, terminated, truncated, _ = env.step(np.zeros(2, np.float32))
        assert terminated is False
        assert truncated == (t == fam.horizon - 1)


def test_gymnasium_env_checker_passes(fam):
    env = P.PointNavEnv(fam.train_tasks[2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the checker reports problems as warnings too ...
        # ... except the unbounded observation space, which is by design (the point is not boxed in)
        warnings.filterwarnings("ignore", message=".*Box observation space (minimum|maximum) value is .*infinity")
        check_env(env, skip_render_check=True)


@pytest.mark.parametrize("task", [(1.0,), (1.0, 2.0, 3.0), (np.nan, 0.0)])
def test_set_task_rejects_bad_goals(task):
    with pytest.raises(MbmlError, match="point-nav task"):
        P.PointNavEnv(task)


def test_oracle_beats_random(fam):
    # hand: goal (1, 0) or (0, 1) from the origin, the oracle moves 0.1 per step straight to it:
    # rewards -0.9, -0.8, ..., -0.1, 0 (step 10) and 0 for the last 10 steps -> return -4.5
    ref = rollout.reference_scores(fam, np.array([[1.0, 0.0], [0.0, 1.0]]), jax.random.PRNGKey(0), episodes=2)
    np.testing.assert_allclose(ref["oracle"], [-4.5, -4.5], rtol=1e-5)
    assert np.all(ref["random"] < -10.0)  # a random walk stays near the origin: about -20 over 20 steps
    ref = rollout.reference_scores(fam, fam.test_tasks, jax.random.PRNGKey(1), episodes=3)
    assert ref["oracle"].shape == ref["random"].shape == (8,)
    assert np.all(ref["oracle"] > ref["random"] + 5.0), ref


def _rollout_dataset(fam, task_ids, steps=20, seed=0) -> Dataset:
    """One random-action episode per training task, recorded with the gymnasium env."""
    rng = np.random.default_rng(seed)
    per_task = []
    for i in task_ids:
        env = fam.make_env(fam.train_tasks[i])
        obs, _ = env.reset(seed=seed)
        rec = {k: [] for k in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")}
        for t in range(steps):
            a = rng.uniform(-1, 1, 2).astype(np.float32)
            nxt, r, term, _, _ = env.step(a)
            for k, v in zip(rec, (obs, a, r, nxt, term, t == steps - 1)):
                rec[k].append(v)
            obs = nxt
        per_task.append({k: np.array(v) for k, v in rec.items()})
    return Dataset.from_tasks(per_task, fam.train_tasks[list(task_ids)])


def test_true_rewards_match_the_env_on_the_diagonal(fam):
    ds = _rollout_dataset(fam, [0, 4, 9])
    tr = true_rewards(ds, fam.true_reward)
    assert tr.shape == (3, 3, 20)
    for i in range(3):
        np.testing.assert_allclose(tr[i, i], ds.rewards[i], rtol=1e-5, atol=1e-6)
    # off the diagonal: task i's reward of task j's transition, -||s'_j - g_i||
    g0 = fam.train_tasks[0]
    np.testing.assert_allclose(tr[0, 2, 7], -np.linalg.norm(ds.next_obs(2)[7] - g0), rtol=1e-5)
    assert not np.allclose(tr[0, 2], tr[2, 2])
