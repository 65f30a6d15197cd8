"""The transfer arms' loop (`mbml transfer`): environments for one task, the starting agent's episodes on
it, and one arm trained and evaluated on the host, one environment step and one learning iteration at
a time (as the authors do), with the family's pure-JAX environment jitted where it has one. Checkpoints
come at every evaluation; an episode running there is cut (a time-limit end) and the next chunk starts
a fresh one, so a resumed arm gives the same curve as an uninterrupted one. `mbml.transfer_run` is the
command around it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from mbml import sac, transfer as T
from mbml.config import TransferConfig
from mbml.families import Family
from mbml.train_loop import run_chunks

# ---------------------------------------------------------------------- environments

class JaxEnvs:
    """A pure-JAX family's environment for K tasks, with `hostenv.TaskEnvs`'s interface (reset, step)."""

    def __init__(self, family: Family, tasks: np.ndarray):
        self.family, self.tasks = family, jnp.asarray(tasks, jnp.float32)
        self.state = None

    def __len__(self):
        return len(self.tasks)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        pass

    def reset(self, seeds) -> np.ndarray:
        keys = jnp.stack([jax.random.PRNGKey(int(s)) for s in seeds])
        self.state, obs = _jax_reset(self.family, keys, self.tasks)
        return np.asarray(obs, np.float32)

    def step(self, actions: np.ndarray, active=None):
        active = np.ones(len(self), bool) if active is None else np.asarray(active, bool)
        self.state, obs, rew, term = _jax_step(self.family, self.state, jnp.asarray(actions), self.tasks,
                                               jnp.asarray(active))
        return np.asarray(obs, np.float32), np.asarray(rew, np.float32), np.asarray(term, bool), {}


@functools.partial(jax.jit, static_argnums=(0,))
def _jax_reset(family: Family, keys, tasks):
    return jax.vmap(family.jax_env.reset)(keys, tasks)


@functools.partial(jax.jit, static_argnums=(0,))
def _jax_step(family: Family, state, actions, tasks, active):
    new, obs, rew, term = jax.vmap(family.jax_env.step)(state, actions, tasks)
    keep = lambda a, b: jnp.where(active.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)  # noqa: E731
    return (jax.tree.map(keep, new, state), jnp.where(active[:, None], obs, 0.0), jnp.where(active, rew, 0.0),
            term & active)


def open_envs(family: Family, tasks: np.ndarray):
    if family.jax_env is not None:
        return JaxEnvs(family, tasks)
    from mbml.hostenv import TaskEnvs

    return TaskEnvs(family, tasks, threads=1)


def _seeds(key, n: int) -> list[int]:
    return [int(s) for s in np.asarray(jax.random.randint(key, (n,), 0, 2**31 - 1))]


def evaluate_policy(family: Family, envs, policy_hidden: tuple, policy, key) -> float:
    """Mean return of one episode per env (`envs`: copies of the task) of the deterministic policy."""
    obs = envs.reset(_seeds(key, len(envs)))
    alive, total = np.ones(len(envs), bool), np.zeros(len(envs))
    for _ in range(family.horizon):
        action = np.asarray(_greedy(policy_hidden, family.act_dim, policy, jnp.asarray(obs)))
        obs, rew, term, _ = envs.step(action, alive)
        total += rew * alive
        alive &= ~term
        if not alive.any():
            break
    return float(total.mean())


@functools.partial(jax.jit, static_argnums=(0, 1))
def _greedy(policy_hidden, act_dim, policy, obs):
    return T.greedy_action(policy_hidden, policy, obs, act_dim)


# ---------------------------------------------------------------------- the student's episodes

def student_episodes(family: Family, agent, params, task: np.ndarray, key, steps: int) -> dict:
    """`steps` transitions of the student on `task` under the evaluation protocol (spec §6): z from the
    prior for the first episode, then sampled from the posterior of all transitions so far; the last
    episode is cut where the steps run out. Returns obs, actions [steps, ...], the z of the last
    episode (frozen for the critics) and each episode's return."""
    from mbml.evaluate import act_batch

    mu, var = jnp.zeros(agent.latent_dim), jnp.ones(agent.latent_dim)
    rows = {"obs": [], "actions": [], "rewards": [], "next_obs": []}
    returns = []
    with open_envs(family, task[None]) as envs:
        while len(rows["obs"]) < steps:
            key, kz, k_seed, k_act = jax.random.split(key, 4)
            z = mu + jnp.sqrt(var) * jax.random.normal(kz, mu.shape)
            obs = envs.reset(_seeds(k_seed, 1))
            ret = 0.0
            for _ in range(min(family.horizon, steps - len(rows["obs"]))):
                k_act, sub = jax.random.split(k_act)
                action = np.asarray(act_batch(agent, params, jnp.asarray(obs), z[None], sub))
                nxt, rew, term, _ = envs.step(action)
                for name, v in zip(rows, (obs[0], action[0], rew[0], nxt[0])):
                    rows[name].append(v)
                ret += float(rew[0])
                obs = nxt
                if term[0]:
                    break
            returns.append(ret)
            tr = {name: jnp.asarray(np.stack(v)) for name, v in rows.items()}
            mu, var = agent.posterior(params, agent.context(tr["obs"], tr["actions"], tr["rewards"], tr["next_obs"]))
    return {"obs": np.stack(rows["obs"]), "actions": np.stack(rows["actions"]), "z": np.asarray(z),
            "returns": returns}


# ---------------------------------------------------------------------- one arm

@dataclass(frozen=True)
class Arm:
    """One arm's run on one task: its name, settings, and where its budget starts (the student arm's
    own episodes come first)."""

    name: str
    cfg: TransferConfig
    run_sac: sac.SACConfig
    family: Family
    offset: int = 0

    @property
    def steps(self) -> int:
        return self.cfg.steps - self.offset

    @property
    def learns_from(self) -> int:
        return self.run_sac.warmup_steps if self.name == "sac" else self.cfg.init_steps

    @property
    def points(self) -> int:
        return -(-self.steps // self.cfg.eval_every) + 1


def _empty_buffer(n: int, obs_dim: int, act_dim: int) -> dict:
    return {"obs": jnp.zeros((n, obs_dim)), "actions": jnp.zeros((n, act_dim)), "rewards": jnp.zeros(n),
            "next_obs": jnp.zeros((n, obs_dim)), "terminals": jnp.zeros(n)}


@functools.partial(jax.jit, donate_argnums=(0,))
def _write(buf: dict, t, item: dict) -> dict:
    return {name: buf[name].at[t].set(item[name]) for name in buf}


@functools.partial(jax.jit, static_argnums=(0,))
def _act(arm: Arm, learner, obs, key, t):
    return T.act(arm.cfg, arm.run_sac, arm.family.act_dim, arm.name, learner, obs, key, t)


@functools.partial(jax.jit, static_argnums=(0,), donate_argnums=(1,))
def _learn(arm: Arm, learner, buf, count, key, sums):
    learner, metrics = T.learn_step(arm.cfg, arm.run_sac, arm.family.act_dim, arm.name, learner, buf, count, key)
    return learner, {k: sums[k] + metrics[k] for k in T.METRICS}


def train_arm(arm: Arm, learner, task: np.ndarray, key, ckpt: Path | None, log_path: Path | None,
              progress=None) -> dict:
    """Run `arm` for its budget from `learner`, evaluating every `eval_every` steps (and before the
    first). Returns {"steps": env steps counted from the start of the task, "returns": [points]}."""
    cfg, family = arm.cfg, arm.family
    k_env, k_eval, k_run = jax.random.split(key, 3)
    policy_hidden = cfg.policy_hidden if arm.name != "sac" else arm.run_sac.policy_hidden
    zeros = {k: jnp.zeros(()) for k in T.METRICS}
    carry = {"learner": learner, "buf": _empty_buffer(arm.steps, family.obs_dim, family.act_dim), "key": k_run,
             "curve": jnp.full(arm.points, jnp.nan), "sums": zeros, "updates": jnp.zeros(()),
             "episode_returns": jnp.zeros(()), "episodes": jnp.zeros(())}
    with open_envs(family, task[None]) as envs, open_envs(family, np.repeat(task[None], cfg.eval_episodes, 0)) as ev:
        def evaluate(c, done):
            score = evaluate_policy(family, ev, policy_hidden, T.policy_of(arm.name, c["learner"]),
                                    jax.random.fold_in(k_eval, done))
            i = -(-done // cfg.eval_every)
            if log_path is not None:
                n, eps = float(c["updates"]), float(c["episodes"])
                sums = jax.device_get(c["sums"])
                row = {"step": arm.offset + done, "eval_return": score,
                       "train_episode_return": float(c["episode_returns"]) / eps if eps else float("nan"),
                       **{k: float(sums[k]) / n if n else float("nan") for k in T.METRICS}}
                _append_row(log_path, row)
            return {**c, "curve": jnp.asarray(c["curve"]).at[i].set(score), "sums": zeros, "updates": jnp.zeros(()),
                    "episode_returns": jnp.zeros(()), "episodes": jnp.zeros(())}

        def advance(c, done, n):
            learner, buf, key, sums = c["learner"], c["buf"], c["key"], c["sums"]
            rng = np.random.default_rng(_seeds(jax.random.fold_in(k_env, done), 1)[0])
            obs, ep, ep_ret = envs.reset([rng.integers(2**31 - 1)]), 0, 0.0
            updates, returns, episodes = float(c["updates"]), float(c["episode_returns"]), float(c["episodes"])
            for t in range(done, done + n):
                key, k_act, k_learn = jax.random.split(key, 3)
                action = np.asarray(_act(arm, learner, jnp.asarray(obs[0]), k_act, t))
                nxt, rew, term, _ = envs.step(action[None])
                buf = _write(buf, t, {"obs": obs[0], "actions": action, "rewards": rew[0], "next_obs": nxt[0],
                                      "terminals": term[0].astype(np.float32)})
                ep, ep_ret = ep + 1, ep_ret + float(rew[0])
                if term[0] or ep >= family.horizon:
                    returns, episodes = returns + ep_ret, episodes + 1
                    obs, ep, ep_ret = envs.reset([rng.integers(2**31 - 1)]), 0, 0.0
                else:
                    obs = nxt
                if t >= arm.learns_from:
                    learner, sums = _learn(arm, learner, buf, t + 1, k_learn, sums)
                    updates += 1
            return {**c, "learner": learner, "buf": buf, "key": key, "sums": sums, "updates": jnp.asarray(updates),
                    "episode_returns": jnp.asarray(returns), "episodes": jnp.asarray(episodes)}

        if ckpt is None or not Path(ckpt).exists():
            if log_path is not None:
                log_path.unlink(missing_ok=True)
            carry = evaluate(carry, 0)
        carry = run_chunks(carry, arm.steps, cfg.eval_every, advance, ckpt, progress, after=evaluate)
    steps = arm.offset + np.minimum(np.arange(arm.points) * cfg.eval_every, arm.steps)
    return {"steps": steps.tolist(), "returns": np.asarray(carry["curve"]).tolist()}


def _append_row(path: Path, row: dict) -> None:
    from mbml.run_folder import _append_csv

    _append_csv(path, row)
