"""Next-state ensembles and relabelling (spec §4.2-4.3, WalkerParam) with hand-computed values.

The hand-made ensembles are linear (no hidden layer): member m of task i predicts
    r  = w_m * x0 + 2 * a + i                     with w = (-1, 0, 1)
    s' = (5 + i + x0 + w_m * x1,  -5 + 3 * w_m * x1)
for s = (x0, x1). Over the three members the unbiased std of w is sqrt((1 + 0 + 1) / 2) = 1, so the
reward std is |x0| and the next-state std is (|x1| + 3 |x1|) / 2 = 2 |x1| (mean over the two dims);
the means are 2a + i and (5 + i + x0, -5). With ddof = 0 the stds would be sqrt(2/3) as large.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbml import distill, ensembles as E, student as S
from mbml.config import DistillConfig, EnsembleConfig
from mbml.data import Dataset
from mbml.transitions import device_data

W = np.array([-1.0, 0.0, 1.0], np.float32)
CFG = EnsembleConfig(members=3, hidden=(), next_state_hidden=(), std_threshold=0.1, next_state_std_threshold=0.2,
                     next_state=True)
# transitions (x0, x1): both stds low | low reward std, high next-state std | high reward std, low next-state std
OBS = np.array([[0.05, 0.05], [0.05, 0.5], [0.5, 0.05]], np.float32)
ACT = np.array([[0.5], [-1.0], [0.25]], np.float32)


def _linear_members(kernel, bias):
    """Members [K=2, M=3] of a hidden-layer-free MLP: kernel(i, w) [3, out], bias(i) [out]."""
    return {"params": {"Dense_0": {
        "kernel": jnp.array([[kernel(i, w) for w in W] for i in range(2)], jnp.float32),
        "bias": jnp.array([[bias(i)] * len(W) for i in range(2)], jnp.float32)}}}


REWARD = _linear_members(lambda i, w: [[w], [0.0], [2.0]], lambda i: [float(i)])
NEXT = _linear_members(lambda i, w: [[1.0, 0.0], [w, 3 * w], [0.0, 0.0]], lambda i: [5.0 + i, -5.0])


@pytest.fixture(scope="module")
def hand():
    """Two tasks with the same three transitions; recorded next states all zero (each one its own
    episode, cut by the time limit, so the next states need not be the following states)."""
    z = np.zeros((2, 3), bool)
    return Dataset.from_arrays(observations=np.stack([OBS, OBS]), actions=np.stack([ACT, ACT]),
                               rewards=z.astype(np.float32), next_observations=np.zeros((2, 3, 2), np.float32),
                               terminals=z, timeouts=~z, tasks=np.eye(2))


def test_unbiased_std_and_means_of_hand_made_ensembles(hand):
    mean, std = E.ensemble_outputs(E.reward_target(CFG), REWARD, hand)
    assert mean.shape == std.shape == (2, 2, 3)
    np.testing.assert_allclose(std, np.broadcast_to(np.abs(OBS[:, 0]), (2, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(mean, np.broadcast_to(2 * ACT[:, 0] + np.arange(2)[:, None, None], (2, 2, 3)), rtol=1e-5)
    mean, std = E.ensemble_outputs(E.next_state_target(CFG, 2), NEXT, hand)
    assert mean.shape == (2, 2, 3, 2) and std.shape == (2, 2, 3)
    np.testing.assert_allclose(std, np.broadcast_to(2 * np.abs(OBS[:, 1]), (2, 2, 3)), rtol=1e-5)
    for i in range(2):
        for j in range(2):
            np.testing.assert_allclose(mean[i, j], np.stack([5 + i + OBS[:, 0], np.full(3, -5.0)], -1), rtol=1e-5)


def test_combined_filter_needs_both_stds_under_their_thresholds(hand):
    lab = E.relabel(CFG, REWARD, hand, next_members=NEXT)
    # reward std (0.05, 0.05, 0.5) < 0.1 and next-state std (0.1, 1.0, 0.1) < 0.2: only t0 passes both
    for i, j in ((0, 1), (1, 0)):
        np.testing.assert_array_equal(lab["accept"][i, j], [True, False, False])
    assert not lab["accept"][0, 0].any() and not lab["accept"][1, 1].any()  # never the own task
    np.testing.assert_allclose(lab["next_threshold"], [0.2, 0.2])
    assert lab["next_obs"].shape == (2, 2, 3, 2) and lab["next_obs"].dtype == np.float32  # 96 bytes: stored
    stats = E.relabel_stats(lab)
    # per off-diagonal pair: reward accepts t0, t1; next state t0, t2; both only t0
    assert stats["accept_rate_reward"] == pytest.approx(4 / 6)
    assert stats["accept_rate_next_state"] == pytest.approx(4 / 6)
    assert stats["accept_rate"] == pytest.approx(2 / 6)
    assert stats["next_state_stored"] == 1.0


def test_relabelling_reports_one_step_per_pass_over_a_task(hand):
    seen = []
    E.relabel(CFG, REWARD, hand, true_reward=lambda task, obs, act, nxt, extras: obs[:, 0],
              next_members=NEXT, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(d, 6) for d in range(7)]  # 2 tasks x (reward, next state, true reward)


def test_without_next_state_ensembles_the_reward_filter_alone(hand):
    lab = E.relabel(CFG, REWARD, hand)
    np.testing.assert_array_equal(lab["accept"][0, 1], [True, True, False])
    assert "next_obs" not in lab and "accept_rate_next_state" not in E.relabel_stats(lab)


def test_mean_next_states_not_stored_over_the_budget(hand):
    lab = E.relabel(dataclasses.replace(CFG, next_state_store_mb=0), REWARD, hand, next_members=NEXT)
    assert "next_obs" not in lab and E.relabel_stats(lab)["next_state_stored"] == 0.0
    np.testing.assert_array_equal(lab["accept"][0, 1], [True, False, False])


def test_heldout_error_against_no_change(hand):
    held = E.heldout(3, 0.5)  # every 2nd transition: t0 and t2
    np.testing.assert_array_equal(held, [True, False, True])
    assert not E.heldout(3, 0.0).any()
    lab = E.relabel(CFG, REWARD, hand, next_members=NEXT, held=held)
    # s' recorded as (0, 0): task i's mean (5 + i + x0, -5) is off by (5 + i + x0 + 5) / 2 on average
    x0 = OBS[[0, 2], 0]
    np.testing.assert_allclose(lab["next_heldout_error"], [np.mean((5 + i + x0 + 5) / 2) for i in range(2)], rtol=1e-5)
    np.testing.assert_allclose(lab["next_heldout_change"], np.abs(OBS[[0, 2]]).mean(), rtol=1e-5)


def test_next_state_ensembles_learn_task_dependent_dynamics():
    """Trained through the same loop as the reward ensembles: per-task s' = s + c_i * a is learned."""
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(2, 512, 2)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(2, 512, 2)).astype(np.float32)
    nxt = obs + np.array([0.5, -0.5], np.float32)[:, None, None] * act
    cfg = EnsembleConfig(members=3, next_state_hidden=(32,), next_state_steps=300, lr=1e-2)
    target = E.next_state_target(cfg, 2)
    every = np.ones((2, 512), bool)  # unrelated (s, s') pairs: each transition an episode of its own
    data = device_data(Dataset.from_arrays(obs, act, np.zeros((2, 512)), nxt, ~every, every, np.eye(2)))
    members = E.train_ensembles(cfg, target, data, jax.random.PRNGKey(0))
    assert jax.tree.leaves(members)[0].shape[:2] == (2, 3)
    first = jax.tree.map(lambda x: x[0], members)
    assert E.predict(target, first, data["obs"][0], data["actions"][0]).shape == (3, 512, 2)
    pred = E.next_state_mean(target, members, data["obs"], data["actions"])  # [K_i, K_j, N, obs]
    err = np.abs(np.asarray(pred) - nxt[None]).mean((2, 3))
    change = np.abs(obs - nxt).mean()
    assert err[0, 0] < 0.25 * change and err[1, 1] < 0.25 * change  # own dynamics learned
    assert err[0, 1] > 2 * err[1, 1] and err[1, 0] > 2 * err[0, 0]  # the other task's are not


# ------------------------------------------------------------------ distillation's encoder inputs

K, N, C = 2, 3, 2
TINY = DistillConfig(latent_dim=2, encoder_hidden=(8,), q_hidden=(8,), g_hidden=(8,), xi_hidden=(8,), context_size=C)


@functools.partial(jax.jit, static_argnums=(0,))
def _inputs(method, params, data, lab, idx):
    trip, (mu, var), metrics = distill.relabelled_encoder_inputs(TINY, distill.METHODS[method], params, data, lab, idx,
                                                                 jax.random.PRNGKey(7))
    return trip, mu, var


@pytest.fixture(scope="module")
def enc(hand):
    params = S.init(TINY, jax.random.PRNGKey(0), 2, 1)
    full = E.relabel(CFG, REWARD, hand, next_members=NEXT)
    lab = {"accept": jnp.asarray(full["accept"]), "reward": jnp.asarray(full["mean"])}
    return {"params": params, "data": device_data(hand), "lab": lab, "next_obs": jnp.asarray(full["next_obs"]),
            "idx": jnp.array([[0, 1], [2, 0]])}


def _run(enc, **lab):
    return _inputs("full", enc["params"], enc["data"], {**enc["lab"], **lab}, enc["idx"])


def test_stored_and_recomputed_next_states_give_the_same_inputs(enc):
    stored = _run(enc, next_obs=enc["next_obs"])
    recomputed = _run(enc, next_obs=E.next_state_relabeller(E.next_state_target(CFG, 2), NEXT))
    for a, b in zip(stored, recomputed):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # the relabelled next states are used: the recorded ones (all zero here) give another fast context
    recorded = _run(enc)
    assert not np.allclose(stored[1], recorded[1]) and not np.allclose(stored[2], recorded[2])


def test_only_accepted_off_task_next_states_are_used(enc):
    base = _run(enc, next_obs=enc["next_obs"])
    rejected = ~np.asarray(enc["lab"]["accept"])  # includes the own task (i == j): its recorded s' is kept
    changed = jnp.where(jnp.asarray(rejected)[..., None], 1000.0, enc["next_obs"])
    for a, b in zip(base, _run(enc, next_obs=changed)):
        np.testing.assert_allclose(a, b, rtol=1e-5)
