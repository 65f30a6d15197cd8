"""Jitted episodes in pure-JAX environments: the evaluation side of every stage."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from mbml.families import Family


def episode(family: Family, policy: Callable, task, key):
    """One episode of `policy(obs, key) -> action` on `task`.

    Returns (return, transitions) where transitions hold obs, actions, rewards, next_obs and a
    `valid` mask (False after termination) for each of the `horizon` steps.
    """
    env = family.jax_env
    k_reset, k_run = jax.random.split(key)
    state, obs = env.reset(k_reset, task)

    def body(carry, k):
        state, obs, alive = carry
        action = policy(obs, k)
        state, next_obs, reward, terminal = env.step(state, action, task)
        out = {"obs": obs, "actions": action, "rewards": reward, "next_obs": next_obs, "valid": alive}
        return (state, next_obs, alive & ~terminal), out

    _, tr = jax.lax.scan(body, (state, obs, jnp.ones((), bool)), jax.random.split(k_run, family.horizon))
    return jnp.sum(tr["rewards"] * tr["valid"]), tr


def mean_return(family: Family, policy: Callable, task, key, episodes: int):
    """Mean undiscounted return of `episodes` independent episodes."""
    returns, _ = jax.vmap(lambda k: episode(family, policy, task, k))(jax.random.split(key, episodes))
    return returns.mean()


def reference_scores(family: Family, tasks, key, episodes: int = 5) -> dict:
    """Per-task mean returns of the scripted oracle (if any) and a uniform random policy."""
    tasks = jnp.asarray(tasks, jnp.float32)
    keys = jax.random.split(key, len(tasks))
    rand = lambda obs, k: jax.random.uniform(k, (family.act_dim,), minval=-1.0, maxval=1.0)  # noqa: E731
    out = {"random": jax.vmap(lambda t, k: mean_return(family, rand, t, k, episodes))(tasks, keys)}
    if family.oracle is not None:
        out["oracle"] = jax.vmap(lambda t, k: mean_return(
            family, lambda o, kk: family.oracle(o, t), t, k, episodes))(tasks, keys)
    return {k: jax.device_get(v) for k, v in out.items()}
