"""TaskEnvs stepped on threads gives bit-identical results to sequential stepping."""

from __future__ import annotations

import numpy as np
import pytest

from mbml.errors import MbmlError
from mbml.families import get_family
from mbml.hostenv import TaskEnvs


def _trajectory(family, tasks, threads, steps=40, seed=0):
    """Random-action rollout with partial activity masks and per-env resets on termination."""
    rng = np.random.default_rng(seed)
    out = []
    with TaskEnvs(family, tasks, threads=threads) as envs:
        assert envs.threads == min(threads, len(tasks))
        out.append(envs.reset(np.arange(len(tasks)) + 100))
        for t in range(steps):
            actions = rng.uniform(-1, 1, (len(tasks), family.act_dim)).astype(np.float32)
            active = rng.random(len(tasks)) < 0.8 if t % 3 == 0 else None
            obs, rew, term, extras = envs.step(actions, active)
            out += [obs, rew, term, *(extras[k] for k in sorted(extras))]
            for i in np.flatnonzero(term):
                out.append(envs.reset_one(i, 1000 + t))
    return out


@pytest.mark.parametrize("name", ["halfcheetah-vel", "walker-param"])
@pytest.mark.parametrize("threads", [2, 3])
def test_threaded_matches_sequential(name, threads):
    family = get_family(name)
    tasks = np.asarray(family.train_tasks)[:4]
    seq = _trajectory(family, tasks, threads=1)
    par = _trajectory(family, tasks, threads=threads)
    assert len(seq) == len(par)
    for a, b in zip(seq, par):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def test_more_threads_than_envs_and_bad_values(monkeypatch):
    family = get_family("halfcheetah-vel")
    tasks = np.asarray(family.train_tasks)[:2]
    with TaskEnvs(family, tasks, threads=8) as envs:
        assert envs.threads == 2
    monkeypatch.setenv("MBML_ENV_THREADS", "2")
    with TaskEnvs(family, tasks) as envs:
        assert envs.threads == 2
    monkeypatch.setenv("MBML_ENV_THREADS", "zero")
    with pytest.raises(MbmlError):
        TaskEnvs(family, tasks)
    with pytest.raises(MbmlError):
        TaskEnvs(family, tasks, threads=0)


def test_worker_error_propagates():
    family = get_family("halfcheetah-vel")
    tasks = np.asarray(family.train_tasks)[:4]
    with TaskEnvs(family, tasks, threads=2) as envs:
        envs.reset(range(4))
        with pytest.raises(ValueError):
            envs.step(np.zeros((4, family.act_dim + 3), np.float32))  # wrong action size in every env
        envs.step(np.zeros((4, family.act_dim), np.float32))  # still usable afterwards


@pytest.mark.slow
def test_collect_host_same_data_with_threads_and_true_next_obs_at_episode_ends():
    """collect_host's data do not depend on threads; at an episode end next_obs is the env's next
    state, never the following reset (the resets once wrote into the buffer `_write` was reading)."""
    import dataclasses

    import jax

    from mbml.config import preset
    from mbml.hostenv import collect_host

    family = get_family("walker-param")  # random-action episodes last ~10 steps: many resets
    cfg = dataclasses.replace(preset("walker-param", "smoke").sac, total_steps=60, warmup_steps=30)
    a, b = (collect_host(family, cfg, jax.random.PRNGKey(0), threads=n) for n in (1, 2))
    for f in ("observations", "actions", "rewards", "final_observations", "terminals", "timeouts"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    for k in a.extras:
        np.testing.assert_array_equal(a.extras[k], b.extras[k])
    ends = np.argwhere((a.terminals | a.timeouts)[:, :-1])
    assert len(ends) > 50
    assert not any(np.array_equal(a.next_obs(i)[t], a.observations[i, t + 1]) for i, t in ends)
