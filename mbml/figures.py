"""The report's figures (PNG): datasets, scores, learning curves, posteriors, task inference."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mbml import io  # noqa: E402
from mbml.methods import REGISTRY  # noqa: E402

COLORS = {name: info.color for name, info in REGISTRY.items()}


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def _starts(ds, t: int) -> np.ndarray:
    """First step of each episode in task t's data (after a terminal or a time-limit cut)."""
    ends = np.asarray(ds.terminals[t], bool) | np.asarray(ds.timeouts[t], bool)
    return np.concatenate([[True], ends[:-1]])


def datasets(run, seed: int, path: Path) -> Path:
    """(a) Where each task's dataset went (the paper's Fig. 1 picture), in the family's `view`:
    positions as a scatter, or a velocity as one histogram per task."""
    ds = run.dataset(seed)
    fam = run.family
    view = fam.view
    k = ds.num_tasks
    fig, (ax, ax_ret) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [1.1, 1]})
    cmap = plt.get_cmap("viridis", k)
    _returns_panel(ax_ret, ds, cmap)
    rng = np.random.default_rng(0)
    goals = fam.train_tasks
    for t in range(k):
        obs = np.asarray(ds.observations[t])
        pts = view.points(obs, {key: np.asarray(v[t]) for key, v in ds.extras.items()}, _starts(ds, t))
        if pts.ndim == 1:
            ax.hist(pts, bins=60, histtype="step", density=True, color=cmap(t))
            if view.tasks == "values":
                ax.axvline(goals[t, 0], color=cmap(t), ls="--", lw=1)
            continue
        pick = rng.choice(len(pts), min(len(pts), 1500), replace=False)
        ax.scatter(pts[pick, 0], pts[pick, 1], s=2, alpha=0.3, color=cmap(t))
    if view.tasks == "points" and goals.shape[1] == 2:
        ax.scatter(goals[:, 0], goals[:, 1], marker="*", s=150, c=[cmap(t) for t in range(k)], edgecolors="k",
                   label="training goals")
        ax.scatter(fam.test_tasks[:, 0], fam.test_tasks[:, 1], marker="x", s=60, c="k", label="test goals")
        ax.legend(loc="lower left", fontsize=8)
        ax.set_aspect("equal")
    elif view.tasks == "directions":
        reach = np.abs(ax.get_xlim() + ax.get_ylim()).max()
        for t, theta in enumerate(goals[:, 0]):
            ax.plot([0, reach * np.cos(theta)], [0, reach * np.sin(theta)], color=cmap(t), lw=1, ls="--")
        ax.set_aspect("equal")
    ax.set_xlabel(view.labels[0])
    ax.set_ylabel(view.labels[1] if len(view.labels) > 1 else "density")
    what = "states visited" if len(view.labels) > 1 else "velocities"
    ax.set_title(f"{fam.name}: {what} in each task's dataset (seed {seed})"
                 + (";\ndashed: the task's target" if view.tasks in ("values", "directions") else ""))
    return _save(fig, path)


def _returns_panel(ax, ds, cmap, window: int = 5) -> None:
    """(b) Each task's return per episode through its collection history (running mean of `window`
    episodes): whether each collecting agent learned."""
    for t in range(ds.num_tasks):
        ends = np.flatnonzero(np.asarray(ds.terminals[t], bool) | np.asarray(ds.timeouts[t], bool))
        if len(ends) == 0:
            continue
        sums = np.cumsum(np.asarray(ds.rewards[t], np.float64))[ends]
        returns = np.diff(np.concatenate([[0.0], sums]))
        smooth = np.convolve(returns, np.ones(window) / window, "valid") if len(returns) >= window else returns
        ax.plot(ends[len(ends) - len(smooth):] + 1, smooth, color=cmap(t), lw=1)
    ax.set_xlabel("env steps of collection")
    ax.set_ylabel(f"episode return (mean of {window})")
    ax.set_title("return per episode, one line per task")


def _references(ax, refs: dict) -> None:
    """Horizontal lines: test scores of the oracle, random and zero-action policies, and the teachers
    on their own training tasks (a reference, not a test score)."""
    for name, style, label in (("oracle", "--", "oracle"), ("random", ":", "random"),
                               ("zero_action", (0, (1, 4)), "zero actions")):
        if name in refs:
            ax.axhline(refs[name]["test"]["mean"], ls=style, color="gray", label=label)
    if "teachers" in refs:
        ax.axhline(refs["teachers"]["train"]["mean"], ls="-.", color="black", label="teachers (own training tasks)")


def scores(res: dict, path: Path) -> Path:
    """(b) Test score per method: every seed, mean and 95% CI, with oracle, random and teacher references."""
    methods = list(res["methods"])
    fig, ax = plt.subplots(figsize=(1.6 * len(methods) + 2.5, 4))
    for i, m in enumerate(methods):
        t = res["methods"][m]["test"]
        n = len(t["per_seed"])
        ax.scatter(i + (np.linspace(-0.1, 0.1, n) if n > 1 else np.zeros(1)), t["per_seed"],
                   color=COLORS.get(m, "gray"), zorder=3, s=18)
        if n > 1:  # one seed has no interval: its dot is all there is
            lo, hi = t["ci95"]
            ax.errorbar(i, t["mean"], yerr=[[t["mean"] - lo], [hi - t["mean"]]], fmt="s", color="k", capsize=6,
                        zorder=4)
    _references(ax, res["references"])
    ax.set_xticks(range(len(methods)), methods)
    ax.set_xlim(-0.5, len(methods) - 0.5)
    ax.set_ylabel("test score (mean return, episodes 3-5)")
    several = any(len(res["methods"][m]["test"]["per_seed"]) > 1 for m in methods)
    ax.set_title("Unseen test tasks: seeds, mean and 95% CI" if several else "Unseen test tasks: one seed (no interval)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def curves(res: dict, path: Path) -> Path:
    """(c) Test score against training steps (mean over seeds; band = min..max), from the methods'
    `curve` in `res` (results.json), with its references."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for m, v in res["methods"].items():
        if not v.get("curve"):
            continue
        steps, y = v["curve"]["step"], np.asarray(v["curve"]["test_score"])
        ax.plot(steps, y.mean(0), label=m, color=COLORS.get(m))
        ax.fill_between(steps, y.min(0), y.max(0), alpha=0.2, color=COLORS.get(m))
    _references(ax, res["references"])
    ax.set_xlabel("training steps (distillation for MBML)")
    ax.set_ylabel("test score")
    ax.set_title("Test score during training")
    ax.legend(fontsize=8)
    return _save(fig, path)


def posteriors(run, seed: int, methods, path: Path) -> Path:
    """(d) Posterior means of z for each test task after the 5 episodes, projected on 2 principal axes."""
    shown = [m for m in ("full", "neither") if m in methods] or list(methods)[:2]
    fig, axes = plt.subplots(1, len(shown), figsize=(4.5 * len(shown), 4), squeeze=False)
    tasks = run.family.test_tasks
    if tasks.shape[1] == 2:  # goals: their angle seen from the origin (point-nav: the goal itself)
        value, cmap, lim, label = np.arctan2(tasks[:, 1], tasks[:, 0]), "twilight", (0, np.pi), "goal angle (rad)"
    elif tasks.shape[1] == 1:  # a direction, velocity...: the value
        value, cmap, label = tasks[:, 0], "viridis", "task parameter"
        lim = (value.min(), value.max())
    else:  # many parameters (walker-param): the task's index
        value, cmap, lim, label = np.arange(len(tasks)), "viridis", (0, len(tasks) - 1), "test task index"
    for ax, m in zip(axes[0], shown):
        ev = io.read_json(run.seed_dir(seed) / "eval" / f"{m}.json")
        means = np.asarray(ev["test"]["posterior_means"])[:, 1:]  # [T, E, L], after each episode
        flat = means.reshape(-1, means.shape[-1])
        centre = flat.mean(0)
        _, _, vt = np.linalg.svd(flat - centre, full_matrices=False)
        proj = (means - centre) @ vt[:2].T
        sc = None
        for t in range(len(tasks)):
            ax.plot(proj[t, :, 0], proj[t, :, 1], color="lightgray", lw=0.8, zorder=1)
            sc = ax.scatter(proj[t, -1, 0], proj[t, -1, 1], c=[value[t]], cmap=cmap, vmin=lim[0], vmax=lim[1],
                            s=60, edgecolors="k", zorder=2)
        ax.set_title(m)
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
    fig.suptitle("Posterior means of z on each test task after episodes 1-5 (dot: final), 2 principal axes")
    if sc is not None:
        fig.colorbar(sc, ax=axes[0].tolist(), label=label)
    return _save(fig, path)


def diagnostic(res: dict, path: Path) -> Path:
    """(e) Task-inference diagnostic: does the encoder read rewards or states/actions?"""
    methods = [m for m, v in res["methods"].items() if "diagnostic" in v]
    fig, ax = plt.subplots(figsize=(1.5 * len(methods) + 2.5, 3.5))
    x = np.arange(len(methods))
    rr = [res["methods"][m]["diagnostic"]["reads_rewards"] for m in methods]
    rs = [res["methods"][m]["diagnostic"]["reads_states"] for m in methods]
    ax.bar(x - 0.2, rr, 0.4, label="infers the task of the rewards (i)")
    ax.bar(x + 0.2, rs, 0.4, label="infers the task of the states/actions (j)")
    ax.set_xticks(x, methods)
    ax.set_ylim(0, 1)
    ax.set_ylabel("fraction of (i, j) contexts")
    ax.set_title("Task j's transitions relabelled with task i's true rewards")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _t_band(y: np.ndarray):
    """Mean over seeds (axis 0) and its 95% Student-t band (none for one seed)."""
    from mbml.report import ci95

    mean = y.mean(0)
    if len(y) < 2:
        return mean, None
    lo, hi = np.array([ci95(col) for col in y.T]).T
    return mean, (lo, hi)


def compare_scores(entries, results, path: Path) -> Path:
    """`mbml compare`: each method's test score, every seed a dot, mean and 95% interval, with the
    references of the first run."""
    fig, ax = plt.subplots(figsize=(1.4 * len(entries) + 2.5, 4))
    for i, e in enumerate(entries):
        per_seed = e.scores["test"].mean(1)
        n = len(per_seed)
        ax.scatter(i + (np.linspace(-0.12, 0.12, n) if n > 1 else np.zeros(1)), per_seed,
                   color=COLORS.get(e.method, "gray"), zorder=3, s=18)
        mean, band = _t_band(per_seed[:, None])
        yerr = [[mean[0] - band[0][0]], [band[1][0] - mean[0]]] if band else None
        ax.errorbar(i, mean[0], yerr=yerr, fmt="s", color="k", capsize=6, zorder=4)
    _references(ax, results[0]["references"])
    ax.set_xticks(range(len(entries)), [e.label for e in entries], rotation=20, ha="right")
    ax.set_xlim(-0.5, len(entries) - 0.5)
    ax.set_ylabel("test score (mean return, episodes 3-5)")
    ax.set_title("Unseen test tasks: seeds, mean and 95% CI")
    ax.legend(fontsize=8)
    return _save(fig, path)


def compare_curves(entries, path: Path) -> Path:
    """`mbml compare`: test score against training steps, mean over seeds with a 95% band."""
    fig, ax = plt.subplots(figsize=(8, 4))
    for e in entries:
        if not e.curve:
            continue
        mean, band = _t_band(np.asarray(e.curve["test_score"], float))
        color = COLORS.get(e.method)
        ax.plot(e.curve["step"], mean, label=e.label, color=color)
        if band is not None:
            ax.fill_between(e.curve["step"], *band, alpha=0.2, color=color)
    ax.set_xlabel("training steps (distillation for MBML)")
    ax.set_ylabel("test score")
    ax.set_title("Test score during training (mean, 95% band over seeds)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.text(0.5, 0.5, "no learning curves in these results.json (made before schema 2)",
                ha="center", va="center", transform=ax.transAxes)
    return _save(fig, path)


def ensemble_study(study: dict, path: Path) -> Path:
    """The reward-ensemble study (paper Fig. 7): mean |error| of the accepted relabelled rewards against the
    fraction accepted, as the std threshold sweeps; a single network (no filter) and the run's threshold."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(study["accept_rate"], study["abs_error_accepted"], "o-", ms=3, color=COLORS.get("full"),
            label=f"ensemble of {study['members']}, std threshold swept")
    ax.scatter([study["run_accept_rate"]], [study["run_abs_error_accepted"]], marker="*", s=140, zorder=4,
               color=COLORS.get("full"), edgecolor="k", label="the run's threshold")
    ax.scatter([1.0], [study["single_all"]], marker="X", s=90, zorder=4, color="tab:red",
               label="single network (member 0): no std, no filter")
    ax.set_xlabel("fraction of other tasks' transitions accepted")
    ax.set_ylabel("mean |relabelled - true reward| of accepted")
    ax.set_title("Relabelling: the ensemble's std filter vs a single network")
    ax.legend(fontsize=8)
    return _save(fig, path)


TRANSFER_COLORS = {"student": COLORS.get("full", "C0"), "scratch": "tab:gray", "sac": "k"}


def transfer_curves(res: dict, path: Path) -> Path:
    """`mbml transfer`: each arm's evaluation return against env steps on the new task, mean over seeds
    with a 95% band, and the student's own episodes (no online learning) as a dashed line."""
    from mbml.transfer_run import arm_label

    fig, ax = plt.subplots(figsize=(8, 4))
    for arm, v in res["arms"].items():
        mean, band = _t_band(np.asarray(v["per_seed"], float))
        color = TRANSFER_COLORS.get(arm)
        ax.plot(v["steps"], mean, label=f"{arm_label(arm, res['method'])} ({len(v['seeds'])} seeds)", color=color)
        if band is not None:
            ax.fill_between(v["steps"], *band, alpha=0.2, color=color)
    if "student_episodes" in res:
        ax.axhline(res["student_episodes"]["mean_return"], ls="--", color=TRANSFER_COLORS["student"], lw=1,
                   label="the student's own episodes")
    ax.set_xlabel("environment steps on the new task (the student's own episodes included)")
    ax.set_ylabel("return (deterministic policy)")
    ax.set_title(f"Transfer of {res['method']} to {res['family']} {res['task_label']}: mean, 95% band over seeds")
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def make_all(run, seeds, methods, res, out: Path) -> dict[str, Path]:
    figs = {"datasets": datasets(run, seeds[0], out / "datasets.png"),
            "test scores": scores(res, out / "scores.png"),
            "test score during training": curves(res, out / "curves.png"),
            "posterior means": posteriors(run, seeds[0], methods, out / "posteriors.png")}
    if any("diagnostic" in v for v in res["methods"].values()):
        figs["task-inference diagnostic"] = diagnostic(res, out / "diagnostic.png")
    if "ensemble_study" in res:
        figs["reward ensemble vs a single network"] = ensemble_study(res["ensemble_study"], out / "ensemble_study.png")
    return figs
