"""The evaluation protocol on unseen tasks (spec §6) and the task-inference diagnostic, for any agent.

Per task: `ev.episodes` episodes (5); the first acts with z from the prior N(0, I) (N(0, s^2 I) for an
agent with `prior_std` s: FOCAL's 0 acts with z = 0, its empty context); after every
episode the agent's posterior is recomputed from all transitions collected so far on that task and a
fresh z is sampled. The score is the mean undiscounted return of the episodes after `ev.score_from`
(episodes 3-5); the last episode's return (PEARL's score) is kept beside it. Two variants of the field
run the same loop: `nonprior` (CSRO's: the first episode acts uniformly at random) and `offline-context`
(FOCAL's: the context is drawn from a dataset of the task, never from the agent's own episodes).

One function, `protocol`, runs it for every method (an `mbml.agents.Agent`) and every family: jitted
as a whole for pure-JAX families, with the episodes stepped on the host (`hostenv.episodes`) for the
MuJoCo ones. The keys are split the same way on both paths: per task, then per episode into (next,
z noise, episode).
"""

from __future__ import annotations

import contextlib
import functools

import jax
import jax.numpy as jnp
import numpy as np

from mbml import rollout
from mbml.agents import Agent
from mbml.config import EvalConfig
from mbml.families import Family
from mbml.transitions import take


def score(returns, score_from: int):
    """Mean of the returns of episodes score_from+1 ... (episodes 3-5 for score_from=2): [..., E] -> [...]."""
    return jnp.mean(returns[..., score_from:], axis=-1)


def _adapt(family: Family, agent: Agent, ev: EvalConfig, use_mean: bool, run_episodes, params, tasks, key,
           explore: int = 0, offline: dict | None = None) -> dict:
    """The protocol's loop over episodes, for every task at once; `run_episodes(z [T, L], keys [T], random)`
    gives returns [T] and transitions [T, H, ...] (with a `valid` mask); the first `explore` episodes act
    uniformly at random (`random` True). `offline` (each task's dataset, [T, N, ...]): FOCAL's
    offline-context protocol, where before episode i the context gains H transitions drawn i.i.d. from
    the task's dataset and the agent's own transitions never enter it."""
    t, h, e = tasks.shape[0], family.horizon, ev.episodes
    keys = jax.random.split(key, t)
    mu = jnp.zeros((t, agent.latent_dim))  # the prior: N(0, I), or N(0, prior_std^2 I) where the agent says
    var = jnp.full((t, agent.latent_dim), getattr(agent, "prior_std", 1.0) ** 2)
    buf, mask = None, jnp.zeros((t, e * h), bool)
    returns, means, stds, last = [], [mu], [], []

    def add(buf, mask, i, tr, valid):
        ctx = agent.context(*(jnp.asarray(tr[f]) for f in ("obs", "actions", "rewards", "next_obs")))
        buf = jnp.zeros((t, e * h, ctx.shape[-1])) if buf is None else buf
        buf = jax.lax.dynamic_update_slice(buf, ctx, (0, i * h, 0))
        mask = jax.lax.dynamic_update_slice(mask, jnp.asarray(valid), (0, i * h))
        return (buf, mask, *_posterior(agent, params, buf, mask))

    for i in range(e):  # unrolled: e is small
        keys, kz, kr = jnp.moveaxis(jax.vmap(lambda k: jax.random.split(k, 3))(keys), 1, 0)
        if offline is not None:
            kr, kc = jnp.moveaxis(jax.vmap(jax.random.split)(kr), 1, 0)
            drawn = take(offline, jax.vmap(lambda k: jax.random.randint(k, (h,), 0, offline["obs"].shape[1]))(kc))
            buf, mask, mu, var = add(buf, mask, i, drawn, jnp.ones((t, h), bool))
        noise = 0.0 if use_mean and i > 0 else 1.0  # episode 1 always samples (online: the prior)
        z = mu + noise * jnp.sqrt(var) * jax.vmap(lambda k, m: jax.random.normal(k, m.shape))(kz, mu)
        ret, tr = run_episodes(z, kr, i < explore)
        if offline is None:
            buf, mask, mu, var = add(buf, mask, i, tr, tr["valid"])
        returns.append(jnp.asarray(ret)), means.append(mu), stds.append(jnp.sqrt(var).mean(-1))
        last.append(jnp.asarray(tr["next_obs"])[:, -1])
    returns = jnp.stack(returns, 1)
    return {"returns": returns, "score": score(returns, ev.score_from), "last_episode": returns[:, -1],
            "posterior_means": jnp.stack(means, 1), "posterior_std": jnp.stack(stds, 1), "last_obs": jnp.stack(last, 1)}


@functools.partial(jax.jit, static_argnums=(0,))
def _posterior(agent: Agent, params, ctx, mask):
    return agent.posterior(params, ctx, mask)


def uniform_action(act_dim: int, obs, key):
    """Uniform random actions in [-1, 1] for one observation or a batch [..., obs]."""
    return jax.random.uniform(key, obs.shape[:-1] + (act_dim,), minval=-1.0, maxval=1.0)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 7))
def _protocol_jax(family: Family, agent: Agent, ev: EvalConfig, use_mean: bool, params, tasks, key,
                  explore: int = 0, offline: dict | None = None) -> dict:
    def run_episodes(z, keys, random):
        def one(task, k, zz):
            act = ((lambda obs, kk: uniform_action(family.act_dim, obs, kk)) if random
                   else (lambda obs, kk: agent.act(params, obs, zz, kk)))
            return rollout.episode(family, act, task, k)
        return jax.vmap(one)(tasks, keys, z)
    return _adapt(family, agent, ev, use_mean, run_episodes, params, tasks, key, explore, offline)


@functools.partial(jax.jit, static_argnums=(0,))
def act_batch(agent: Agent, params, obs, z, key):
    """The agent's actions for a batch of observations [T, obs] with their task variables [T, L]."""
    keys = jax.random.split(key, obs.shape[0])
    return jax.vmap(lambda o, zz, k: agent.act(params, o, zz, k))(obs, z, keys)


def _protocol_host(family: Family, agent: Agent, ev: EvalConfig, use_mean: bool, params, tasks, key,
                   threads: int | None = None, envs=None, explore: int = 0, offline: dict | None = None) -> dict:
    from mbml import hostenv

    def run_episodes(z, keys, random):
        k_act = jax.random.split(keys[0])[0]  # the actions' stream; keys[0] itself seeds task 0's env
        seeds = np.asarray(jax.vmap(lambda k: jax.random.randint(k, (), 0, 2**31 - 1))(keys))
        policy = ((lambda obs, k: uniform_action(family.act_dim, obs, k)) if random
                  else (lambda obs, k: act_batch(agent, params, obs, z, k)))
        return hostenv.episodes(family, open_envs, policy, k_act, seeds)

    tasks = np.asarray(tasks)
    with contextlib.nullcontext(envs) if envs is not None else hostenv.TaskEnvs(family, tasks, threads) as open_envs:
        return _adapt(family, agent, ev, use_mean, run_episodes, params, tasks, key, explore, offline)


def protocol(family: Family, agent: Agent, params, tasks, key, ev: EvalConfig, use_mean: bool = False,
             threads: int | None = None, envs=None, explore: int = 0, offline: dict | None = None) -> dict:
    """Run the protocol once on every task. Returns per-task `returns` [T, E], `score` [T] (episodes
    after `score_from`), `last_episode` [T], `posterior_means` [T, E+1, L] (the prior's first),
    `posterior_std` [T, E] (mean std after each episode) and `last_obs` [T, E, obs] (where each
    episode ended). `use_mean` acts with the posterior mean from episode 2 on instead of a sample (an
    analysis switch; the protocol samples). Host-stepped families may pass open `envs` (`TaskEnvs`).
    `explore` > 0: the first `explore` episodes act uniformly at random (CSRO's non-prior collection;
    the `nonprior` protocol), and the posterior after them is the first the agent acts with.
    `offline` (`transitions.device_data` of a dataset of these tasks, [T, N, ...]): the `offline-context`
    protocol (FOCAL's): before episode i the context gains H transitions drawn i.i.d. from the task's
    data, the agent's own never enter it, and `posterior_means[:, i + 1]` is the posterior episode i acted with."""
    if family.jax_env is not None:
        return _protocol_jax(family, agent, ev, use_mean, params, jnp.asarray(tasks, jnp.float32), key, explore,
                             offline)
    return _protocol_host(family, agent, ev, use_mean, params, tasks, key, threads, envs, explore, offline)


def evaluate(family: Family, agent: Agent, params, tasks, key, ev: EvalConfig, explore: int = 0,
             offline: dict | None = None) -> dict:
    """The protocol `ev.repeats` times per task (run r with key fold_in(key, r), the first with key):
    numpy arrays, with `returns`, `score` and `last_episode` averaged over the runs and the rest of
    the first run's."""
    runs = [jax.device_get(protocol(family, agent, params, tasks, jax.random.fold_in(key, r) if r else key, ev,
                                    explore=explore, offline=offline)) for r in range(ev.repeats)]
    out = {k: np.asarray(v) for k, v in runs[0].items()}
    for k in ("returns", "score", "last_episode"):
        out[k] = np.mean([np.asarray(r[k]) for r in runs], axis=0)
    return out


@functools.partial(jax.jit, static_argnums=(0, 5))
def inference_diagnostic(agent: Agent, params, data, true_rewards, key, draws: int = 16):
    """How an agent's encoder infers a task when states/actions and rewards disagree (paper Fig. 1, §3.2).

    Centroid c_k = mean posterior mean over `draws` contexts of task k's own data, each of
    `agent.diagnostic_size` transitions. For each ordered pair (i, j), i != j: a context of task-j
    transitions whose rewards are task i's *true* rewards; the posterior mean is assigned to its
    nearest centroid. Returns the fraction assigned to i (the encoder reads rewards) and to j (it
    reads states and actions), over pairs and draws.
    """
    k, n = data["obs"].shape[:2]
    size = agent.diagnostic_size
    k1, k2 = jax.random.split(key)

    def post(obs, act, rew, nxt):
        return agent.posterior(params, agent.context(obs, act, rew, nxt))[0]

    def centroid(kk):
        idx = jax.random.randint(kk, (k, size), 0, n)
        b = take(data, idx)
        return jax.vmap(post)(b["obs"], b["actions"], b["rewards"], b["next_obs"])

    centroids = jax.vmap(centroid)(jax.random.split(k1, draws)).mean(0)  # [K, L]

    def one_draw(kk):
        idx = jax.random.randint(kk, (k, size), 0, n)  # per task j
        b = take(data, idx)
        rew = jax.vmap(lambda r: jax.vmap(lambda x, i: x[i])(r, idx))(true_rewards)  # [K_i, K_j, size]
        mu = jax.vmap(lambda r: jax.vmap(post)(b["obs"], b["actions"], r, b["next_obs"]))(rew)  # [K_i, K_j, L]
        d = jnp.sum((mu[:, :, None] - centroids[None, None]) ** 2, -1)
        nearest = jnp.argmin(d, -1)  # [K_i, K_j]
        return nearest == jnp.arange(k)[:, None], nearest == jnp.arange(k)[None, :]

    to_i, to_j = jax.vmap(one_draw)(jax.random.split(k2, draws))
    off = ~jnp.eye(k, dtype=bool)
    return {"reads_rewards": jnp.sum(to_i * off) / (draws * off.sum()),
            "reads_states": jnp.sum(to_j * off) / (draws * off.sum())}


def summarize(x) -> dict:
    return {k: np.asarray(v).tolist() for k, v in jax.device_get(x).items()}
