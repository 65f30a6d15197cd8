"""`mbml compare`: methods side by side, from the results.json of one or more run folders.

What a comparison of methods on the same data needs (Agarwal et al. 2021, "Deep RL at the edge of
the statistical precipice"): every seed shown, not only a mean; intervals that say how sure the
mean is; an aggregate robust to one bad task or seed (the interquartile mean over seed x task runs,
with a stratified bootstrap interval); the probability that one method beats another; and, where
two methods ran on the same seeds' datasets (one run folder), paired per-seed differences.

    mbml compare RUN [RUN ...] --out DIR [--reference full] [--allow-mixed]

writes DIR/compare.md (the tables), DIR/compare.json (their numbers) and DIR/curves.png,
DIR/scores.png. A RUN is a run folder or a results.json. Runs of different families or presets
are refused unless --allow-mixed (their numbers are not comparable).

The statistics are scipy's (`trim_mean`, `bootstrap`, `mannwhitneyu`), computed as rliable defines
them; rliable itself (1.2.0) fails to import beside pandas 3 (its `arch` dependency, measured
2026-12-07), so it is not a dependency.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mbml import io
from mbml.errors import MbmlError
from mbml.report import SPLITS, ci95, runs_table

BOOTSTRAP = 2000
"""Bootstrap resamples for the IQM's interval (rliable's default is 2000 as well)."""


@dataclass
class Entry:
    """One method of one run: its per-seed x per-task scores on each split."""

    label: str
    method: str
    run: str
    kind: tuple  # (family, preset): scores compare only within one
    seeds: list
    scores: dict  # split -> [seeds, tasks] array
    last: dict  # split -> [seeds] last-episode means (where recorded)
    curve: dict


def load(paths) -> list[dict]:
    out = []
    for p in map(Path, paths):
        f = p if p.suffix == ".json" else p / "results.json"
        if not f.exists():
            raise MbmlError(f"no {f}; run `mbml report --out {f.parent}` first")
        res = io.read_json(f)
        if not isinstance(res, dict) or "methods" not in res:
            raise MbmlError(f"{f} is not an mbml results.json")
        res["_path"] = str(f.parent)
        out.append(res)
    return out


def _matrix(stats: dict) -> np.ndarray:
    """[seeds, tasks] scores; results.json made before schema 2 keeps only per-seed means: [seeds, 1]."""
    if "per_seed_task" in stats:
        return np.asarray(stats["per_seed_task"], float)
    return np.asarray(stats["per_seed"], float)[:, None]


def entries(results: list[dict]) -> list[Entry]:
    names = [m for res in results for m in res["methods"]]
    out = []
    for res in results:
        for m, v in res["methods"].items():
            label = m if names.count(m) == 1 else f"{m} ({Path(res['_path']).name})"
            splits = [s for s in SPLITS if s in v]
            out.append(Entry(label, m, res["_path"], (res["family"], res["preset"]), list(res["seeds"]), {s: _matrix(v[s]) for s in splits},
                             {s: np.asarray(v[s]["last_episode"]["per_seed"]) for s in splits
                              if "last_episode" in v[s]}, v.get("curve", {})))
    return out


def check_comparable(results: list[dict], allow_mixed: bool) -> None:
    kinds = {(r["family"], r["preset"]) for r in results}
    if len(kinds) > 1 and not allow_mixed:
        shown = ", ".join(f"{f} ({p})" for f, p in sorted(kinds, key=str))
        raise MbmlError(f"the runs are of different families or presets ({shown}): their scores are not "
                        "comparable; compare runs of one family and preset, or pass --allow-mixed")


def iqm(x: np.ndarray) -> float:
    """Interquartile mean of all values: the mean of the middle 50% (rliable's `aggregate_iqm`:
    scipy.stats.trim_mean over the flattened runs)."""
    from scipy.stats import trim_mean

    return float(trim_mean(np.asarray(x, float).ravel(), 0.25))


def stratified_bootstrap_ci(scores: np.ndarray, stat, rng: np.random.Generator, reps: int = BOOTSTRAP) -> list[float]:
    """95% percentile interval of `stat` over resamples of the seeds drawn with replacement
    independently for each task (rliable's stratified bootstrap): scipy.stats.bootstrap with one
    sample per task, which it resamples independently. scores: [seeds, tasks]."""
    from scipy.stats import bootstrap

    s, _ = scores.shape
    if s < 2:
        return [stat(scores)] * 2
    res = bootstrap(tuple(scores.T), lambda *cols: stat(np.stack(cols, -1)), n_resamples=reps, vectorized=False,
                    method="percentile", rng=rng)
    return [float(res.confidence_interval.low), float(res.confidence_interval.high)]


def prob_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y): for each task, the chance that a run of X scores above a run of Y (ties count 1/2):
    the Mann-Whitney U statistic over n x m, averaged over tasks (rliable's
    `probability_of_improvement`). x, y: [seeds, tasks]."""
    from scipy.stats import mannwhitneyu

    return float(np.mean([mannwhitneyu(a, b).statistic / (len(a) * len(b)) for a, b in zip(x.T, y.T)]))


def paired(x: Entry, y: Entry, split: str = "test") -> dict | None:
    """Per-seed differences x - y of the split's mean score, where both ran on the same run folder's
    seeds (the same datasets): mean, 95% t interval and the seeds."""
    if x.run != y.run or split not in x.scores or split not in y.scores:
        return None
    common = [s for s in x.seeds if s in y.seeds]
    if not common:
        return None
    dx = {s: v for s, v in zip(x.seeds, x.scores[split].mean(1))}
    dy = {s: v for s, v in zip(y.seeds, y.scores[split].mean(1))}
    d = np.array([dx[s] - dy[s] for s in common])
    return {"mean": float(d.mean()), "ci95": ci95(d), "per_seed": d.tolist(), "seeds": common}


def compare(results: list[dict], reference: str | None = None, seed: int = 0) -> dict:
    """The comparison's numbers: per method and split the mean over seeds with its t interval, the IQM
    with its stratified bootstrap interval, the last episode's mean, P(reference > method) and the
    paired differences from the reference."""
    es = entries(results)
    if not es:
        raise MbmlError("the runs hold no methods")
    ref = next((e for e in es if e.method == (reference or "full")), None)
    if ref is None and reference is not None:
        raise MbmlError(f"--reference {reference}: no run holds it; methods: {', '.join(e.label for e in es)}")
    ref = ref or es[0]
    rng = np.random.default_rng(seed)
    out = {"reference": ref.label, "methods": {}}
    for e in es:
        row = {"run": e.run, "seeds": e.seeds}
        for split, sc in e.scores.items():
            per_seed = sc.mean(1)
            stats = {"mean": float(per_seed.mean()), "ci95": ci95(per_seed), "per_seed": per_seed.tolist(),
                     "iqm": iqm(sc), "iqm_ci95": stratified_bootstrap_ci(sc, iqm, rng)}
            if split in e.last:
                stats["last_episode"] = float(e.last[split].mean())
            if e is not ref and e.kind == ref.kind and split in ref.scores and ref.scores[split].shape[1] == sc.shape[1]:
                stats[f"p_{ref.method}_better"] = prob_improvement(ref.scores[split], sc)
            row[split] = stats
        if e is not ref:
            d = paired(ref, e)
            if d is not None:
                row["paired_test_difference"] = d
        out["methods"][e.label] = row
    return out


def table(cmp: dict) -> str:
    ref = cmp["reference"]
    ood = any("ood" in v for v in cmp["methods"].values())
    head = ["method", "seeds", "test mean (95% CI)", "test IQM (95% CI)", "last episode", f"P({ref} better)",
            f"{ref} - method, paired", "train mean", *(["ood mean"] if ood else [])]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, v in cmp["methods"].items():
        t = v["test"]
        ci = f"[{t['ci95'][0]:.2f}, {t['ci95'][1]:.2f}]" if len(t["per_seed"]) > 1 else "(one seed)"
        qi = f"[{t['iqm_ci95'][0]:.2f}, {t['iqm_ci95'][1]:.2f}]" if len(t["per_seed"]) > 1 else ""
        p = next((f"{x:.2f}" for k, x in t.items() if k.startswith("p_")), "–")
        d = v.get("paired_test_difference")
        ds = f"{d['mean']:+.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]" if d and len(d["per_seed"]) > 1 else (
            f"{d['mean']:+.2f}" if d else "–")
        last = f"{t['last_episode']:.2f}" if "last_episode" in t else "–"
        cells = [f"`{label}`", str(len(t["per_seed"])), f"{t['mean']:.2f} {ci}", f"{t['iqm']:.2f} {qi}", last, p, ds,
                 f"{v['train']['mean']:.2f}" if "train" in v else "–",
                 *([f"{v['ood']['mean']:.2f}" if "ood" in v else "–"] if ood else [])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def protocols_table(results: list[dict]) -> list[str]:
    """Method x protocol: each run's methods' test scores under every protocol they were evaluated with
    (`report.protocol_table` of each run, one table per run folder); nothing when none has another."""
    from mbml.report import protocol_table

    out = []
    for res in results:
        lines = protocol_table(res)
        if lines:
            out += [f"Run `{Path(res['_path']).name}`. " + lines[0], *lines[1:]]
    return out


def transfer_tables(results: list[dict]) -> list[str]:
    """Each run's `mbml transfer` summaries (results.json's `transfer`), as the transfer folders show them."""
    from mbml.transfer_run import markdown

    out = []
    for res in results:
        for name, t in res.get("transfer", {}).items():
            lines = markdown(t, level="##")
            out += [lines[0] + f" (run `{Path(res['_path']).name}`, folder transfer/{name})",
                    *[line for line in lines[1:] if not line.startswith("![")]]
    return out


def write(results: list[dict], out: Path, reference: str | None = None) -> dict:
    from mbml import figures

    cmp = compare(results, reference)
    out.mkdir(parents=True, exist_ok=True)
    es = entries(results)
    figs = {"test scores": figures.compare_scores(es, results, out / "scores.png"),
            "test score during training": figures.compare_curves(es, out / "curves.png")}
    io.write_json(out / "compare.json", {**cmp, "runs": [r["_path"] for r in results]})
    fams = sorted({f"`{r['family']}` ({r['preset']})" for r in results}, key=str)
    md = [f"# Comparison on {', '.join(fams)}", "",
          "Test score: mean undiscounted return of episodes 3-5 of the evaluation protocol on the unseen test "
          "tasks, averaged over tasks; 95% Student-t intervals over seeds. IQM: interquartile mean over every "
          f"seed x task score, 95% stratified bootstrap interval ({BOOTSTRAP} resamples). Last episode: episode 5 "
          f"alone (PEARL's score). P({cmp['reference']} better): chance that a seed of `{cmp['reference']}` "
          "scores above a seed of the method on a task, averaged over tasks. Paired: per-seed differences on "
          "the same datasets (methods of one run folder).", "", table(cmp), "", *protocols_table(results),
          *transfer_tables(results),
          "## Runs", "", runs_table(results), ""]
    md += [f"![{name}]({p.name})" for name, p in figs.items()]
    io.atomic_write_bytes(out / "compare.md", ("\n".join(md) + "\n").encode())
    return cmp
