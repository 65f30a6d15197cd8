"""The evaluation protocol and the task-inference diagnostic, on scripted agents whose answers are
known: the protocol's posterior chain, its two backends (jitted and host-stepped) agreeing, and the
diagnostic telling an encoder that reads rewards from one that reads states."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbml import evaluate as E
from mbml.config import preset
from mbml.families import get_family


@dataclass(frozen=True)
class Scripted:
    """z is the masked mean of one column of the context (`column`: 0 = x position, -1 = reward), with
    variance `var`; the action heads towards the point (cos z, sin z) of the goal arc."""

    column: int = -1
    var: float = 0.0
    latent_dim: int = 1
    diagnostic_size: int = 4

    def context(self, obs, act, rew, next_obs):
        return jnp.concatenate([obs, act, next_obs, rew[..., None]], axis=-1)

    def posterior(self, params, ctx, mask=None):
        w = jnp.ones(ctx.shape[:-1]) if mask is None else mask.astype(jnp.float32)
        mean = jnp.sum(w * ctx[..., self.column], -1) / jnp.maximum(w.sum(-1), 1.0)
        return mean[..., None] * params, jnp.full(mean.shape + (1,), self.var)

    def act(self, params, obs, z, key):
        target = jnp.stack([jnp.cos(z[0]), jnp.sin(z[0])])
        return jnp.clip(4.0 * (target - obs), -1.0, 1.0)


def test_protocol_recomputes_the_posterior_from_every_episode_so_far():
    fam, ev = get_family("point-nav"), preset("point-nav", "smoke").eval
    tasks = fam.test_tasks[:3]
    out = jax.device_get(E.protocol(fam, Scripted(var=0.0), 1.0, tasks, jax.random.PRNGKey(0), ev))
    e = ev.episodes
    assert out["returns"].shape == (3, e) and out["posterior_means"].shape == (3, e + 1, 1)
    np.testing.assert_array_equal(out["posterior_means"][:, 0], 0.0)  # the prior's mean first
    np.testing.assert_allclose(out["score"], out["returns"][:, ev.score_from:].mean(1), rtol=1e-6)
    np.testing.assert_array_equal(out["last_episode"], out["returns"][:, -1])
    # with zero variance z is the posterior mean: the mean reward of all steps so far, episode by episode
    rewards = out["returns"] / fam.horizon  # point-nav episodes never end early: horizon steps each
    running = np.cumsum(rewards, 1) / np.arange(1, e + 1)
    np.testing.assert_allclose(out["posterior_means"][:, 1:, 0], running, rtol=1e-5)
    np.testing.assert_array_equal(out["posterior_std"], 0.0)


def test_jitted_and_host_stepped_protocols_agree():
    """Point-nav runs either way: same keys, same z, same episodes (its start is fixed and the
    scripted agent ignores its key), so the same returns."""
    fam, ev = get_family("point-nav"), preset("point-nav", "smoke").eval
    tasks = fam.test_tasks[:4]
    agent = Scripted(column=0, var=0.3)
    key = jax.random.PRNGKey(5)
    jitted = jax.device_get(E.protocol(fam, agent, 1.0, tasks, key, ev))
    host = E._protocol_host(fam, agent, ev, False, 1.0, np.asarray(tasks), key)
    for name in ("returns", "posterior_means", "last_obs"):
        np.testing.assert_allclose(np.asarray(host[name]), jitted[name], rtol=1e-4, atol=1e-5, err_msg=name)


def _diagnostic_data(k: int = 3, n: int = 32):
    """Task k's transitions sit at x = k with reward 10 k; true_rewards[i, j] = 10 i on task j's."""
    obs = np.zeros((k, n, 2), np.float32)
    obs[..., 0] = np.arange(k)[:, None]
    data = {"obs": jnp.asarray(obs), "actions": jnp.zeros((k, n, 2)),
            "rewards": jnp.asarray(np.repeat(10.0 * np.arange(k)[:, None], n, 1), jnp.float32),
            "terminals": jnp.zeros((k, n)), "finals": jnp.asarray(obs[:, :1]),
            "final_slot": jnp.full((k, n), -1)}
    true = np.broadcast_to(10.0 * np.arange(k)[:, None, None], (k, k, n)).astype(np.float32)
    return data, jnp.asarray(true)


@pytest.mark.parametrize("column, reads", [(-1, "reads_rewards"), (0, "reads_states")])
def test_diagnostic_tells_what_an_encoder_reads(column, reads):
    data, true = _diagnostic_data()
    out = E.inference_diagnostic(Scripted(column=column), 1.0, data, true, jax.random.PRNGKey(0), 4)
    other = "reads_states" if reads == "reads_rewards" else "reads_rewards"
    assert float(out[reads]) == 1.0 and float(out[other]) == 0.0


def test_nonprior_acts_at_random_first_then_from_the_posterior_of_everything():
    """`explore=1` (CSRO's protocol): episode 1 takes uniform random actions, whatever the agent; the
    episodes after it are the agent's, with z from the posterior of all transitions so far, random
    episode included, on both backends (their random actions come from differently split keys, so only
    the episodes after the random one are compared between them)."""
    fam, ev = get_family("point-nav"), preset("point-nav", "smoke").eval
    tasks = fam.test_tasks[:3]
    key = jax.random.PRNGKey(1)
    online = jax.device_get(E.protocol(fam, Scripted(var=0.0), 1.0, tasks, key, ev))
    nonprior = jax.device_get(E.protocol(fam, Scripted(var=0.0), 1.0, tasks, key, ev, explore=1))
    lost = jax.device_get(E.protocol(fam, Scripted(var=0.0, column=0), 1.0, tasks, key, ev, explore=1))
    # episode 1 is the same random walk whatever the agent reads, and not the agent's own first episode
    np.testing.assert_array_equal(nonprior["returns"][:, 0], lost["returns"][:, 0])
    assert not np.allclose(nonprior["returns"][:, 0], online["returns"][:, 0])
    rewards = nonprior["returns"] / fam.horizon
    running = np.cumsum(rewards, 1) / np.arange(1, ev.episodes + 1)
    np.testing.assert_allclose(nonprior["posterior_means"][:, 1:, 0], running, rtol=1e-5)
    host = jax.device_get(E._protocol_host(fam, Scripted(var=0.0), ev, False, 1.0, tasks, key, explore=1))
    host_online = jax.device_get(E._protocol_host(fam, Scripted(var=0.0), ev, False, 1.0, tasks, key))
    assert not np.allclose(host["returns"][:, 0], host_online["returns"][:, 0])
    host_running = np.cumsum(host["returns"] / fam.horizon, 1) / np.arange(1, ev.episodes + 1)
    np.testing.assert_allclose(host["posterior_means"][:, 1:, 0], host_running, rtol=1e-5)
