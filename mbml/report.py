"""Stage `report`: results.json (the contract other tools read), report.md and figures."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from mbml import config as C, io, methods as M
from mbml.pipeline import Run, peak_rss_mb, versions

# Score references beside the teachers: a scripted oracle (families with one), a uniform random
# policy, and zero actions (MuJoCo families: "does the policy do anything at all?").
REFERENCES = ("oracle", "random", "zero_action")
SPLITS = ("test", "train", "ood")
OWN_PROTOCOLS = tuple(p for p in C.PROTOCOLS if p not in ("online", "online-last"))
"""Protocols with episodes of their own (`eval/M@PROTOCOL.json`); `online` and `online-last` score the
evaluation stage's episodes."""
"""Task splits in results.json: unseen test tasks, the training tasks, out-of-distribution tasks (where
the family defines them)."""

# two-sided 95% Student-t quantiles for 1..30 degrees of freedom
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def ci95(x) -> list[float]:
    """95% confidence interval of the mean across seeds (Student t); a single seed gives [x, x]."""
    x = np.asarray(x, float)
    m = float(x.mean())
    if len(x) < 2:
        return [m, m]
    half = (_T95[len(x) - 2] if len(x) - 1 <= 30 else 1.96) * x.std(ddof=1) / np.sqrt(len(x))
    return [m - half, m + half]


def interval_text(stats: dict) -> str:
    """'[lo, hi]' of a split's 95% interval, or '(one seed)' where there is none to give."""
    if len(stats.get("per_seed", ())) < 2:
        return "(one seed)"
    return f"[{stats['ci95'][0]:.2f}, {stats['ci95'][1]:.2f}]"


SCHEMA = 2
"""results.json's schema: 2 added `schema`, the `ood` split, each split's `last_episode`, the methods'
`curve` and `kind`, and teachers that a run without MBML methods lacks."""


def _split_stats(per_seed_task: np.ndarray) -> dict:
    per_seed = per_seed_task.mean(1)
    return {"mean": float(per_seed.mean()), "ci95": ci95(per_seed), "per_seed": per_seed.tolist(),
            "per_task": per_seed_task.mean(0).tolist(), "per_seed_task": per_seed_task.tolist()}


def _method_stats(ev: list[dict], split: str) -> dict:
    """A method's scores on one split over seeds; with the last episode's return (PEARL's score) where
    the evaluations have it (made since schema 2)."""
    stats = _split_stats(np.array([e[split]["score"] for e in ev]))
    if all("last_episode" in e[split] for e in ev):
        last = np.array([e[split]["last_episode"] for e in ev]).mean(1)
        stats["last_episode"] = {"mean": float(last.mean()), "ci95": ci95(last), "per_seed": last.tolist()}
    return stats


def method_curve(run: Run, seeds, method: str) -> dict:
    """Train and test scores against training steps, per seed, at the steps every seed evaluated."""
    rows = [read_curve(run.seed_dir(s) / "students" / f"{method}.csv") for s in seeds]
    steps = sorted(set.intersection(*(set(r) for r in rows))) if rows else []
    if not steps or "test_score" not in rows[0][steps[0]]:
        return {}
    return {"step": steps, **{name: [[r[st][name] for st in steps] for r in rows] for name in ("train_score", "test_score")}}


def read_curve(path: Path) -> dict[int, dict]:
    rows = {}
    if path.exists():
        with open(path) as f:
            for r in csv.DictReader(f):
                rows[int(r["step"])] = {k: float(v) for k, v in r.items()}
    return rows


def collect_results(run: Run, seeds, methods) -> dict:
    evals = {m: [io.read_json(run.seed_dir(s) / "eval" / f"{m}.json") for s in seeds] for m in methods}
    refs = [io.read_json(run.seed_dir(s) / "eval" / "references.json") for s in seeds]
    res = {"schema": SCHEMA, "family": run.cfg.family, "preset": run.cfg.preset, "seeds": list(seeds),
           "config": C.to_dict(run.cfg), "methods": {}, "references": {}, "relabel": {}, "timings": {},
           "peak_rss_mb": peak_rss_mb(), "versions": versions()}
    for m, ev in evals.items():
        splits = [s for s in SPLITS if all(s in e for e in ev)]
        res["methods"][m] = {"kind": "mbml" if M.get(m).is_student else "baseline",
                             **{split: _method_stats(ev, split) for split in splits}}
        if all("diagnostic" in e for e in ev):
            res["methods"][m]["diagnostic"] = {k: float(np.mean([e["diagnostic"][k] for e in ev]))
                                               for k in ev[0]["diagnostic"]}
        curve = method_curve(run, seeds, m)
        if curve:
            res["methods"][m]["curve"] = curve
        for name in OWN_PROTOCOLS:  # scores under other protocols (`mbml evaluate --protocol`), where every seed has them
            paths = [run.seed_dir(s) / "eval" / f"{m}@{name}.json" for s in seeds]
            if all(p.exists() for p in paths):
                pe = [io.read_json(p) for p in paths]
                res["methods"][m].setdefault("protocols", {})[name] = {
                    split: _method_stats(pe, split) for split in SPLITS if all(split in e for e in pe)}
    for name in REFERENCES:
        if name in refs[0]:
            res["references"][name] = {split: {"mean": float(np.mean([r[name][split] for r in refs]))}
                                       for split in SPLITS if all(split in r[name] for r in refs)}
    if all("teachers" in r for r in refs):
        teach = np.array([r["teachers"]["train"] for r in refs])
        res["references"]["teachers"] = {"train": {"mean": float(teach.mean()), "per_task": teach.mean(0).tolist()}}
    rel = [run.seed_dir(s) / "relabel.json" for s in seeds]
    rel = [io.read_json(p) for p in rel if p.exists()]
    if rel:
        res["relabel"] = {k: float(np.mean([r[k] for r in rel])) for k in rel[0]}
    for s in seeds:
        p = run.seed_dir(s) / "timings.json"
        for k, v in (io.read_json(p) if p.exists() else {}).items():
            res["timings"][k] = res["timings"].get(k, 0.0) + v
        p = run.seed_dir(s) / "memory.json"  # stages run by other processes (stage commands, --workers)
        if p.exists():
            res["peak_rss_mb"] = max(res["peak_rss_mb"], io.read_json(p)["peak_rss_mb"])
    from mbml.ensemble_study import combine, seed_study

    studies = [st for st in (seed_study(run, s) for s in seeds) if st is not None]
    if studies:
        res["ensemble_study"] = combine(studies)
    o, r = res["references"].get("oracle"), res["references"].get("random")
    if o and r:
        for m in res["methods"].values():
            for split in (s for s in SPLITS if s in m and s in o and s in r):
                m[split]["fraction_random_to_oracle"] = (m[split]["mean"] - r[split]["mean"]) / (o[split]["mean"] - r[split]["mean"])
    return res


def protocol_table(res: dict, split: str = "test") -> list[str]:
    """Each method's score under each protocol it was evaluated with (`config.PROTOCOLS`): `online` and
    `online-last` from the evaluation stage, others from `mbml evaluate --protocol`. Empty when no
    method has another protocol."""
    extra = [p for p in OWN_PROTOCOLS if any(p in v.get("protocols", {}) for v in res["methods"].values())]
    if not extra:
        return []
    head = ["method", "online (episodes 3-5)", "online-last (episode 5)", *extra]
    lines = [f"Scores on the {split} tasks under each evaluation protocol (95% interval over seeds):", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m, v in res["methods"].items():
        cells = [f"`{m}`", _with_ci(v.get(split)), _with_ci(v.get(split, {}).get("last_episode"))]
        cells += [_with_ci(v.get("protocols", {}).get(p, {}).get(split)) for p in extra]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _with_ci(stats: dict | None) -> str:
    if not stats:
        return "–"
    if len(stats.get("per_seed", ())) < 2:
        return f"{stats['mean']:.2f}"
    return f"{stats['mean']:.2f} [{stats['ci95'][0]:.2f}, {stats['ci95'][1]:.2f}]"


def _cell(stats: dict | None) -> str:
    return f"{stats['mean']:.2f}" if stats else "–"


def markdown_table(res: dict) -> str:
    """The run's table: each method's scores on every split, with the references."""
    ood = any("ood" in v for v in res["methods"].values())
    lines = ["| method | test score (95% CI) | fraction random→oracle | test, last episode | train score |"
             + (" ood score |" if ood else "") + " reads rewards / states |",
             "|---|---|---|---|---|" + ("---|" if ood else "") + "---|"]
    for m, v in res["methods"].items():
        t, tr = v["test"], v["train"]
        frac = f"{100 * t['fraction_random_to_oracle']:.0f}%" if "fraction_random_to_oracle" in t else "–"
        diag = v.get("diagnostic")
        d = f"{100 * diag['reads_rewards']:.0f}% / {100 * diag['reads_states']:.0f}%" if diag else "–"
        lines.append(f"| `{m}` | {t['mean']:.2f} {interval_text(t)} | {frac} | {_cell(t.get('last_episode'))} | "
                     f"{tr['mean']:.2f} |" + (f" {_cell(v.get('ood'))} |" if ood else "") + f" {d} |")
    refs = res["references"]
    for name in REFERENCES:
        if name in refs:
            lines.append(f"| {name} (reference) | {refs[name]['test']['mean']:.2f} | | | {refs[name]['train']['mean']:.2f} |"
                         + (f" {_cell(refs[name].get('ood'))} |" if ood else "") + " |")
    if "teachers" in refs:
        lines.append(f"| BCQ teachers, own tasks | | | | {refs['teachers']['train']['mean']:.2f} |"
                     + (" |" if ood else "") + " |")
    return "\n".join(lines)


def runs_table(results: list[dict]) -> str:
    """One row per (run, method): the README's table of every family run so far."""
    lines = ["| family | preset | seeds | method | test score (95% CI) | teachers, own tasks | random (test) "
             "| zero actions (test) | stage time |", "|---|---|---|---|---|---|---|---|---|"]
    for res in results:
        refs, secs = res["references"], sum(res["timings"].values())
        rand, still = (f"{refs[n]['test']['mean']:.2f}" if n in refs else "–" for n in ("random", "zero_action"))
        changed = res.get("config", {}).get("overrides", [])
        preset = res["preset"] + (f" + `{' '.join(changed)}`" if changed else "")
        older = C.drift(res["config"]) if "config" in res else []
        preset += f" (older preset: `{' '.join(older)}`)" if older else ""
        for m, v in res["methods"].items():
            t = v["test"]
            lines.append(f"| `{res['family']}` | {preset} | {', '.join(map(str, res['seeds']))} | `{m}` | "
                         f"{t['mean']:.2f} {interval_text(t)} | "
                         f"{_cell(refs.get('teachers', {}).get('train'))} | {rand} | {still} | {secs / 3600:.1f} h |")
    return "\n".join(lines)


def write_report(run: Run, seeds, methods) -> dict:
    from mbml import figures
    from mbml.ensemble_study import markdown as study_markdown

    res = collect_results(run, seeds, methods)
    fig_dir = run.out / "figures"
    figs = figures.make_all(run, seeds, methods, res, fig_dir)
    io.write_json(run.out / "results.json", res)
    rel = res["relabel"]
    changed = f" with `--set {' '.join(run.cfg.overrides)}`" if run.cfg.overrides else ""
    md = [f"# MBML on `{res['family']}` (preset `{res['preset']}`{changed}, seeds {', '.join(map(str, seeds))})", "",
          "Scores are the mean undiscounted return of episodes 3-5 of the evaluation protocol, averaged over "
          "tasks (\"last episode\": episode 5 alone, PEARL's score); intervals are 95% Student-t intervals "
          "across seeds. \"Reads rewards / states\": given "
          "task-j transitions carrying task i's true rewards, how often the inferred task is i / j.", "",
          markdown_table(res), "", *protocol_table(res),
          f"Relabelling: {100 * rel.get('accept_rate', float('nan')):.0f}% of other tasks' transitions accepted"
          + (f", mean |error| of accepted rewards {rel['abs_error_accepted']:.4f} (reward std {rel['reward_std']:.3f})"
             if "abs_error_accepted" in rel else "") + ".", "",
          *(["Reward ensemble against a single network (paper Fig. 7):", "", *study_markdown(res["ensemble_study"]), ""]
            if "ensemble_study" in res else []),
          "Timings (s, summed over seeds): " + ", ".join(f"{k} {v:.0f}" for k, v in res["timings"].items())
          + f"; peak memory {res['peak_rss_mb']:.0f} MB.", ""]
    md += [f"![{name}](figures/{p.name})" for name, p in figs.items()]
    io.atomic_write_bytes(run.out / "report.md", ("\n".join(md) + "\n").encode())
    refresh_transfer(run.out)
    return res


TRANSFER_HEADING = "## Transfer to unseen tasks (`mbml transfer`)"


def refresh_transfer(out: Path) -> None:
    """The `transfer` section of a run's results.json and report.md, from its transfer folders'
    summaries (RUN/transfer/NAME/results.json; figures in RUN/figures/transfer-NAME.png). Called by the
    report and after every `mbml transfer`; a run without a report is left alone."""
    from mbml.transfer_run import markdown

    out = Path(out)
    found = {p.parent.name: io.read_json(p) for p in sorted(out.glob("transfer/*/results.json"))}
    if (out / "results.json").exists():
        res = io.read_json(out / "results.json")
        if found or "transfer" in res:
            io.write_json(out / "results.json", {**res, "transfer": found})
    if (out / "report.md").exists() and found:
        text = (out / "report.md").read_text().split(f"\n{TRANSFER_HEADING}\n")[0].rstrip("\n")
        md = [text, "", TRANSFER_HEADING, ""]
        for name, r in found.items():
            md += markdown(r, figure=f"figures/transfer-{name}.png", level="###") + [""]
        io.atomic_write_bytes(out / "report.md", "\n".join(md).encode())
    from mbml import margin_sweep

    margin_sweep.refresh(out)  # its section follows the transfer's, which the lines above cut off


def gallery(runs: list[Path], dest: Path, link_prefix: str = "") -> str:
    """Copy each run's figures to `dest/<family>-<preset>/` and return a Markdown gallery of them
    (one heading per run; image links start with `link_prefix`, the path from the Markdown file to `dest`)."""
    import shutil

    md = []
    for run in runs:
        res = io.read_json(Path(run) / "results.json")
        name = f"{res['family']}-{res['preset']}"
        figs = sorted((Path(run) / "figures").glob("*.png"))
        if not figs:
            continue
        (dest / name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(run) / "results.json", dest / name / "results.json")  # the table can be remade from it
        md += [f"#### `{res['family']}`, preset `{res['preset']}`, seeds {', '.join(map(str, res['seeds']))}", ""]
        for f in figs:
            shutil.copyfile(f, dest / name / f.name)
            md.append(f'<img src="{link_prefix}{name}/{f.name}" alt="{name} {f.stem}" width="32%">')
        md.append("")
    return "\n".join(md)


def main(argv: list[str]) -> None:
    """python -m mbml.report RUN: that run's results table as Markdown;
    python -m mbml.report RUN RUN ...: one row per run and method (the README's table of families);
    python -m mbml.report --rows RUN: that table's rows for a single run;
    a RUN may be a run folder or a results.json (the gallery keeps a copy of each run's);
    python -m mbml.report --gallery DEST RUN ...: copy the runs' figures to DEST, print a Markdown gallery."""
    from mbml.errors import MbmlError

    if not argv or argv[0] in ("-h", "--help"):
        print("\n".join(line.strip() for line in main.__doc__.splitlines()))
        return
    if argv[:1] == ["--gallery"]:
        if len(argv) < 3:
            raise MbmlError("usage: python -m mbml.report --gallery DEST RUN [RUN ...]")
        dest = Path(argv[1])
        print(gallery([Path(a) for a in argv[2:]], dest, link_prefix=f"{dest.as_posix().rstrip('/')}/"))
        return
    rows = argv[:1] == ["--rows"]
    argv = argv[1:] if rows else argv
    if not argv:
        raise MbmlError("usage: python -m mbml.report [--rows] RUN [RUN ...] | --gallery DEST RUN [RUN ...]")
    paths = [Path(a) if a.endswith(".json") else Path(a) / "results.json" for a in argv]
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise MbmlError(f"no {missing[0]}; run `mbml report --out {missing[0].parent}` first")
    found = [io.read_json(p) for p in paths]
    print(markdown_table(found[0]) if len(found) == 1 and not rows else runs_table(found))


if __name__ == "__main__":
    import sys

    from mbml.errors import MbmlError

    try:
        main(sys.argv[1:])
    except MbmlError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
