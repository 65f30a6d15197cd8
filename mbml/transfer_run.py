"""`mbml transfer`: the transfer arms (`mbml.transfer`) on one task, in a resumable folder RUN/transfer/NAME.

Per seed S of the run: `seed_S/student_episodes.json` (the student's episodes on the task and the frozen z),
`seed_S/ARM.json` (the arm's evaluation curve; written last, it marks the arm done), `seed_S/ARM.csv`
(curve and learner metrics), `seed_S/ckpt/ARM.msgpack` while it runs. `results.json`, `transfer.md` and
`transfer.png` summarise the seeds. The arms' loop (environments, episodes, checkpoints) is
`mbml.transfer_loop`.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from mbml import io, methods as M, sac, transfer as T
from mbml.config import TransferConfig, to_dict
from mbml.errors import MbmlError
from mbml.families import Family
from mbml.train_loop import remove_checkpoint
from mbml.transfer_loop import Arm, student_episodes, train_arm

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
