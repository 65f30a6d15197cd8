"""The reward-ensemble study (paper Fig. 7 and its text): what the ensemble and its std filter buy over a
single reward network, measured on a run's relabelling.

For every ordered pair of training tasks (i, j), i != j, task i's reward model relabels task j's
transitions. Against the true reward (where the family gives it) this measures, for a sweep of std
thresholds, the fraction of relabelled transitions accepted and the mean |error| of the accepted
rewards (the ensemble mean); and the error of one member alone, a single network trained exactly as
the members are (same data, same mini-batches, its own initialisation), which has no std to filter by
and so relabels every transition. The student's score with a single-network relabeller is a run with
`--set ensemble.members=1` (same datasets and teachers: see docs/transfer.md).

Written per seed to `seed_S/ensemble_study.json` (made from relabel.npz and ensembles.msgpack, remade
when they are newer); the report averages the seeds.
"""

from __future__ import annotations

import numpy as np

from mbml import io

LEVELS = np.round(np.linspace(0.05, 1.0, 20), 2)
"""The sweep's thresholds: these quantiles of the std over every relabelled (off-diagonal) transition."""


def seed_study(run, seed: int) -> dict | None:
    """The study of one seed (None: the run has no relabelling or its family no true reward)."""
    d = run.seed_dir(seed)
    lab_path, path = d / "relabel.npz", d / "ensemble_study.json"
    if not lab_path.exists() or not (d / "ensembles.msgpack").exists():
        return None
    if path.exists() and path.stat().st_mtime >= max(lab_path.stat().st_mtime, (d / "ensembles.msgpack").stat().st_mtime):
        return io.read_json(path)
    with np.load(lab_path, allow_pickle=False) as z:
        if "true" not in z.files:
            return None
        mean, std, true, threshold = z["mean"], z["std"], z["true"], z["threshold"]
    k = mean.shape[0]
    off = np.broadcast_to(~np.eye(k, dtype=bool)[:, :, None], mean.shape)
    err = np.abs(mean - true)[off]
    sd = std[off]
    single = np.abs(_first_member(run, seed) - true)[off]
    levels = np.quantile(sd, LEVELS)
    out = {"quantiles": LEVELS.tolist(), "thresholds": levels.tolist(),
           "accept_rate": [float(np.mean(sd < t)) for t in levels],
           "abs_error_accepted": [float(err[sd < t].mean()) if np.any(sd < t) else float("nan") for t in levels],
           "run_threshold": float(np.mean(threshold)), "ensemble_all": float(err.mean()), "single_all": float(single.mean()),
           "reward_std": float(np.std(true)), "members": int(run.cfg.ensemble.members)}
    per_task = np.broadcast_to(threshold[:, None, None], mean.shape)[off]  # each model's own threshold
    out["run_accept_rate"] = float(np.mean(sd < per_task))
    out["run_abs_error_accepted"] = float(err[sd < per_task].mean()) if np.any(sd < per_task) else float("nan")
    io.write_json(path, out)
    return out


def _first_member(run, seed: int) -> np.ndarray:
    """Member 0 of every task's reward ensemble on every task's transitions: [K_i, K_j, N]."""
    import jax

    from mbml.ensembles import ensemble_outputs, init_members, reward_target

    ens, fam = run.cfg.ensemble, run.family
    ds = run.dataset(seed)
    target = reward_target(ens)
    template = init_members(ens, target, ds.num_tasks, fam.obs_dim, fam.act_dim, jax.random.PRNGKey(0))
    members = io.load_pytree(run.seed_dir(seed) / "ensembles.msgpack", template)
    first = jax.tree.map(lambda x: x[:, :1], members)
    return ensemble_outputs(target, first, ds)[0]


def combine(studies: list[dict]) -> dict:
    """The seeds' studies averaged (the thresholds are each seed's quantiles: their mean is reported)."""
    keys = ("thresholds", "accept_rate", "abs_error_accepted")
    out = {k: np.nanmean([s[k] for s in studies], axis=0).tolist() for k in keys}
    for k in ("run_threshold", "run_accept_rate", "run_abs_error_accepted", "ensemble_all", "single_all", "reward_std"):
        out[k] = float(np.nanmean([s[k] for s in studies]))
    return {"quantiles": studies[0]["quantiles"], "members": studies[0]["members"], "seeds": len(studies), **out}


def markdown(study: dict) -> list[str]:
    """The study's table: a few points of the threshold sweep, the run's threshold, and a single network."""
    rows = [("single network (member 0), no filter", float("nan"), 1.0, study["single_all"]),
            (f"ensemble of {study['members']} (mean), no filter", float("nan"), 1.0, study["ensemble_all"]),
            ("ensemble, the run's threshold", study["run_threshold"], study["run_accept_rate"],
             study["run_abs_error_accepted"])]
    for q in (0.25, 0.5, 0.75):
        i = int(np.argmin(np.abs(np.asarray(study["quantiles"]) - q)))
        rows.append((f"ensemble, threshold at the std's {int(100 * q)}% quantile", study["thresholds"][i],
                     study["accept_rate"][i], study["abs_error_accepted"][i]))
    lines = ["| relabeller | std threshold | accepted | mean abs error of accepted rewards |", "|---|---|---|---|"]
    lines += [f"| {name} | {'–' if np.isnan(t) else f'{t:.4f}'} | {100 * a:.0f}% | {e:.4f} |" for name, t, a, e in rows]
    return lines + ["", f"Over every ordered pair of training tasks (relabelling another task's transitions), "
                        f"{study['seeds']} seed(s); the true reward's std is {study['reward_std']:.3f}."]
