"""`mbml transfer`: the transfer arms (`mbml.transfer`) on one task, in a resumable folder RUN/transfer/NAME.

Per seed S of the run: `seed_S/student_episodes.json` (the student's episodes on the task and the frozen z),
`seed_S/ARM.json` (the arm's evaluation curve; written last, it marks the arm done), `seed_S/ARM.csv`
(curve and learner metrics), `seed_S/ckpt/ARM.msgpack` while it runs. `results.json`, `transfer.md` and
`transfer.png` summarise the seeds. Every arm is stepped on the host, one environment step and one
learning iteration at a time (as the authors do), with its pure-JAX environment jitted where the family
has one. Checkpoints come at every evaluation; an episode running there is cut (a time-limit end) and the
next chunk starts a fresh one, so a resumed arm gives the same curve as an uninterrupted one.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from mbml import io, methods as M, sac, transfer as T
from mbml.config import TransferConfig, to_dict
from mbml.errors import MbmlError
from mbml.families import Family
from mbml.train_loop import remove_checkpoint, run_chunks

# ---------------------------------------------------------------------- the task


def parse_task(family: Family, text: str) -> tuple[str, np.ndarray]:
    """The task of `--task`: `test:I`, `train:I` or `ood:I` (a task of the family's splits), numbers
    (`1.3`, `0.5,1.0`) or a .json file of them. Returns (a name for folders, task parameters); a task
    outside the box spanned by the family's train, test and out-of-distribution tasks is refused."""
    splits = {"train": family.train_tasks, "test": family.test_tasks, "ood": family.ood_tasks}
    split, colon, index = text.partition(":")
    if colon:
        tasks = splits.get(split)
        if tasks is None or not len(tasks):
            raise MbmlError(f"--task {text!r}: family {family.name} has no {split!r} tasks; "
                            f"use {', '.join(f'{s}:I' for s, t in splits.items() if t is not None and len(t))} or numbers")
        if not index.isdigit() or int(index) >= len(tasks):
            raise MbmlError(f"--task {text!r}: {split} tasks are numbered 0..{len(tasks) - 1}")
        return f"{split}{int(index)}", np.asarray(tasks[int(index)], np.float64)
    if text.lower().endswith(".json"):
        try:
            values = json.loads(Path(text).read_text())
        except (OSError, ValueError) as e:
            raise MbmlError(f"--task file {text} cannot be read as JSON: {type(e).__name__}") from None
        values = values if isinstance(values, list) else [values]
    else:
        values = text.split(",")
    try:
        task = np.array([float(v) for v in values], np.float64)
    except (TypeError, ValueError):
        raise MbmlError(f"--task {text!r}: expected test:I, train:I, ood:I, numbers like 1.3 or 0.5,1.0, "
                        "or a .json file of numbers") from None
    known = np.concatenate([t for t in splits.values() if t is not None and len(t)])
    if task.shape != known.shape[1:] or not np.all(np.isfinite(task)):
        raise MbmlError(f"--task {text!r}: {family.name} tasks are {known.shape[1]} finite number(s)")
    lo, hi = known.min(0), known.max(0)
    if np.any(task < lo) or np.any(task > hi):
        box = ", ".join(f"[{a:g}, {b:g}]" for a, b in zip(lo, hi))
        raise MbmlError(f"--task {text!r} is outside {family.name}'s tasks (train, test and ood span {box})")
    return "task" + "_".join(f"{v:g}" for v in task), task


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


# ---------------------------------------------------------------------- the command

NAME = re.compile(r"^[A-Za-z0-9._-]+$")


def settings(run, overrides=(), steps: int | None = None, method: str = "full") -> TransferConfig:
    """The run's transfer preset (`presets.transfer_preset`) with `--steps` and `--set transfer.F=V`; the
    critics' sizes are the method's (`critic_hidden` of its module)."""
    from mbml.config_io import _parse
    from mbml.presets import transfer_preset

    hidden = M.get(method).implementation().critic_hidden(run.cfg)
    cfg = replace(transfer_preset(run.cfg, run.family.horizon), q_hidden=hidden)
    changes = {} if steps is None else {"steps": steps}
    for item in overrides:
        key, eq, text = item.partition("=")
        section, _, name = key.rpartition(".")
        if not eq or section not in ("transfer", "") or name not in TransferConfig.__dataclass_fields__:
            raise MbmlError(f"--set {item!r}: expected transfer.FIELD=VALUE with FIELD one of "
                            f"{', '.join(TransferConfig.__dataclass_fields__)}")
        changes[name] = _parse(key, text, getattr(cfg, name))
    try:
        cfg = replace(cfg, **changes)
    except MbmlError as e:
        raise MbmlError(f"transfer.{e}") from None
    if cfg.steps <= cfg.collect_steps and "student" in cfg.arms:
        raise MbmlError(f"transfer.steps={cfg.steps}: the budget must be larger than the student's own episodes "
                        f"(transfer.collect_steps={cfg.collect_steps}), which it includes")
    if hidden != tuple(cfg.q_hidden) and "student" in cfg.arms:
        raise MbmlError(f"transfer.q_hidden={cfg.q_hidden}: the student arm's critics are {method}'s "
                        f"({hidden}); leave it or drop the student arm")
    return cfg


def transfer(out: Path, method: str, task_text: str, seeds=None, steps: int | None = None, overrides=(),
             name: str | None = None, force: bool = False, progress=None) -> Path:
    """Run `mbml transfer`; returns the transfer folder. Every input is checked before anything is written."""
    from mbml.pipeline import Run

    run = Run.open(Path(out), create=False)
    if not run.family.simulated:
        raise MbmlError(f"{out}: transfer needs a simulator, and its data have no family")
    info = M.get(method)
    label, task = parse_task(run.family, task_text)
    cfg = settings(run, overrides, steps, method)
    recorded = sorted(int(p.name[5:]) for p in run.out.glob("seed_*") if p.name[5:].isdigit())
    seeds = list(seeds) if seeds else recorded
    if not seeds:
        raise MbmlError(f"{out} has no seed folders; run `mbml run` first")
    for seed in seeds:
        if "student" in cfg.arms:
            run.require(seed, info.step)
    name = name or f"{method}-{label}"
    if not NAME.match(name):
        raise MbmlError(f"--name {name!r}: use letters, digits, '.', '_' and '-'")
    folder = run.out / "transfer" / name
    record = {"method": method, "task": task.tolist(), "task_label": label, "family": run.family.name,
              "preset": run.cfg.preset, "transfer": to_dict(cfg)}
    saved = folder / "config.json"
    if saved.exists() and not force:
        old = io.read_json(saved)
        if {k: old.get(k) for k in record} != json.loads(json.dumps(record)):
            diff = next(k for k in record if json.loads(json.dumps(record[k])) != old.get(k))
            raise MbmlError(f"{folder} was made with another {diff}; use --name for a new folder or --force "
                            "to start it again (nothing was changed)")
    from mbml.lock import FolderLock, writer

    with FolderLock(folder):  # one writer per transfer folder; the run's own stages may go on beside it
        if force:
            for item in folder.iterdir():
                if item.name != ".mbml-lock":
                    shutil.rmtree(item) if item.is_dir() else item.unlink()
        from mbml.run_folder import versions

        before = io.read_json(saved).get("seeds", []) if saved.exists() else []
        io.write_json(saved, {**record, "seeds": sorted(set(seeds) | set(before)), "versions": versions()})
        for seed in seeds:
            run_seed(run, folder, method, task, cfg, seed, progress)
        summarise(folder)
    if writer(run.out) is None:  # else the run's report adds the transfer when it is written
        from mbml.report import refresh_transfer

        with FolderLock(run.out):
            refresh_transfer(run.out)
    return folder


def run_seed(run, folder: Path, method: str, task: np.ndarray, cfg: TransferConfig, seed: int, progress=None) -> None:
    d = folder / f"seed_{seed}"
    key = jax.random.fold_in(run.key(seed, "transfer"), int(np.asarray(task * 1000, np.int64).sum()) % (2**31))
    fam = run.family
    for arm_name in cfg.arms:
        done = d / f"{arm_name}.json"
        if done.exists():
            continue
        k_arm = jax.random.fold_in(key, ("student", "scratch", "sac").index(arm_name))
        k_init, k_train = jax.random.split(k_arm)
        ckpt = d / "ckpt" / f"{arm_name}.msgpack"
        bar = None if progress is None else (lambda i, n, a=arm_name: progress(f"seed {seed} {a}", i, n))
        if arm_name == "student":
            learner, offset = _student_learner(run, d, method, task, cfg, seed, k_init, fresh=not ckpt.exists())
        elif arm_name == "scratch":
            learner, offset = T.init_scratch(cfg, k_init, fam.obs_dim, fam.act_dim), 0
        else:
            learner, offset = sac.init(run.cfg.sac, k_init, fam.obs_dim, fam.act_dim), 0
        arm = Arm(arm_name, cfg, run.cfg.sac, fam, offset)
        curve = train_arm(arm, learner, task, k_train, ckpt, d / f"{arm_name}.csv", bar)
        io.write_json(done, curve)
        remove_checkpoint(ckpt)


def _student_learner(run, d: Path, method: str, task, cfg: TransferConfig, seed: int, key, fresh: bool):
    """The student arm's starting learner: its episodes on the task (kept in student_episodes.json), behaviour
    cloning and the critics from its Q. A resumed arm needs only the shapes (its checkpoint has the rest)."""
    fam = run.family
    saved = run.load_saved(seed, method)  # one read of students/M.msgpack
    q1, q2 = M.get(method).implementation().transfer_critics(run.cfg, saved)
    path = d / "student_episodes.json"
    k_collect, k_bc = jax.random.split(key)
    if not fresh and path.exists():
        z = np.asarray(io.read_json(path)["z"], np.float32)
        policy = T.init_policy(cfg, k_bc, fam.obs_dim, fam.act_dim)
        return T.init_from_agent(cfg, policy, q1, q2, z), cfg.collect_steps
    eps = student_episodes(fam, run.agent(method), saved["params"], task, k_collect, cfg.collect_steps)
    policy, bc = T.behaviour_clone(cfg, k_bc, jnp.asarray(eps["obs"]), jnp.asarray(eps["actions"]))
    io.write_json(path, {"z": eps["z"].tolist(), "episode_returns": eps["returns"], "steps": cfg.collect_steps,
                         "bc_loss": float(bc)})
    return T.init_from_agent(cfg, policy, q1, q2, eps["z"]), cfg.collect_steps


# ---------------------------------------------------------------------- results

def summarise(folder: Path) -> dict:
    """results.json, transfer.md and transfer.png of a transfer folder, from its seeds' finished arms."""
    from mbml.report import ci95

    rec = io.read_json(folder / "config.json")
    cfg = rec["transfer"]
    arms = {}
    for arm in cfg["arms"]:
        curves = {int(p.parent.name[5:]): io.read_json(p) for p in sorted(folder.glob(f"seed_*/{arm}.json"))}
        if not curves:
            continue
        y = np.array([c["returns"] for c in curves.values()], float)
        arms[arm] = {"seeds": sorted(curves), "steps": next(iter(curves.values()))["steps"], "per_seed": y.tolist(),
                     "mean": y.mean(0).tolist(), "ci95": [ci95(col) for col in y.T], "final": float(y[:, -1].mean())}
    student = [io.read_json(p) for p in sorted(folder.glob("seed_*/student_episodes.json"))]
    out = {"method": rec["method"], "task": rec["task"], "task_label": rec["task_label"], "family": rec["family"],
           "preset": rec["preset"], "budget": cfg["steps"], "arms": arms}
    if student:
        out["student_episodes"] = {"mean_return": float(np.mean([np.mean(s["episode_returns"]) for s in student])),
                                   "bc_loss": float(np.mean([s["bc_loss"] for s in student]))}
    for ref in ("scratch", "sac"):
        if ref not in arms:
            continue
        level = arms[ref]["final"]
        reach = {a: T.crossing_step(np.asarray(v["steps"]), np.asarray(v["mean"]), level) for a, v in arms.items()}
        out[f"steps_to_{ref}_final"] = reach
        if "student" in arms:
            cross = reach["student"]
            out[f"gain_vs_{ref}"] = None if cross is None else (cfg["steps"] - cross) / cfg["steps"]
    io.write_json(folder / "results.json", out)
    if arms:
        from mbml.figures import transfer_curves

        fig = transfer_curves(out, folder / "transfer.png")
        run_figures = folder.parent.parent / "figures"  # for the run's report (and the gallery)
        run_figures.mkdir(exist_ok=True)
        shutil.copyfile(fig, run_figures / f"transfer-{folder.name}.png")
    io.atomic_write_bytes(folder / "transfer.md", ("\n".join(markdown(out)) + "\n").encode())
    return out


ARM_LABELS = {"student": "SAC from the student", "scratch": "same SAC, random init", "sac": "plain SAC (collector)"}


def arm_label(arm: str, method: str) -> str:
    """An arm's name in tables and figures; the `student` arm of a baseline is named after it."""
    if arm == "student" and method in M.REGISTRY and not M.get(method).is_student:
        return f"SAC from {method}"
    return ARM_LABELS[arm]


def markdown(res: dict, figure: str = "transfer.png", level: str = "##") -> list[str]:
    """The transfer's table: each arm's first and final return and when it reaches the references' finals."""
    params = ", ".join(f"{v:.4g}" for v in res["task"])
    lines = [f"{level} Transfer of `{res['method']}` to {res['family']} task {res['task_label']} "
             f"({params}), budget {res['budget']} env steps", "",
             "| arm | seeds | first eval | final return (95% CI) | steps to scratch's final | steps to plain SAC's final |",
             "|---|---|---|---|---|---|"]
    for arm, v in res["arms"].items():
        lo, hi = v["ci95"][-1]
        ci = f" [{lo:.1f}, {hi:.1f}]" if len(v["seeds"]) > 1 else " (one seed)"
        reach = [res[f"steps_to_{r}_final"].get(arm) if f"steps_to_{r}_final" in res else "–" for r in ("scratch", "sac")]
        lines.append(f"| {arm_label(arm, res['method'])} | {len(v['seeds'])} | {v['mean'][0]:.1f} at {v['steps'][0]} | "
                     f"{v['final']:.1f}{ci} | " + " | ".join("never" if s is None else s if s == "–" else f"{s:.0f}"
                                                             for s in reach) + " |")
    lines.append("")
    for ref in ("scratch", "sac"):
        if f"gain_vs_{ref}" in res:
            g = res[f"gain_vs_{ref}"]
            lines.append(f"Gain of {arm_label('student', res['method'])} vs {ARM_LABELS[ref]} (the paper's \"+x%\": "
                         "(budget - first step at which its seed-mean return reaches the reference's final "
                         "seed-mean) / budget): "
                         + ("never reached" if g is None else f"{100 * g:+.0f}%") + ".")
    if "student_episodes" in res:
        s = res["student_episodes"]
        who = "student" if M.get(res["method"]).is_student else f"{res['method']} agent"
        lines += ["", f"The {who}'s own episodes on the task (no online learning): mean return {s['mean_return']:.2f}; "
                      f"behaviour-cloning loss {s['bc_loss']:.3f}."]
    return lines + ["", f"![transfer]({figure})"]
