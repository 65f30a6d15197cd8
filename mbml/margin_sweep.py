"""The triplet-margin sweep of the paper's appendix (Fig. 11; spec: margins 0, 2, 4, 8).

`mbml margin-sweep --out RUN` distils a run's student again with each triplet margin, from the run's
own data, teachers and relabelling, with the same key as the run's student (only the margin differs),
and scores every student by the run's protocol on the training and test tasks. The run's own margin
reuses its student and evaluation. Per seed and margin `RUN/margin_sweep/seed_S/mM.json` (resumable:
a finished one is kept; a killed distillation continues from its checkpoint); the summary is
`RUN/margin_sweep/results.json`, the figure `RUN/figures/margin_sweep.png`, and the run's
`results.json` and `report.md` gain a `margin_sweep` section.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np

from mbml import io
from mbml.config import METHODS
from mbml.distill import distill
from mbml.errors import MbmlError
from mbml.report import _split_stats
from mbml.train_loop import remove_checkpoint
from mbml.transitions import device_data

MARGINS = (0.0, 2.0, 4.0, 8.0)
HEADING = "## Triplet-margin sweep (`mbml margin-sweep`)"


def check(run, method: str, seeds, margins) -> None:
    """One-line errors before anything is written: a method without the triplet loss, a negative
    margin, a seed without teachers (or relabelling, where the method uses it)."""
    if method not in METHODS:
        raise MbmlError(f"the margin sweep is for MBML students ({', '.join(METHODS)}), not {method!r}")
    if METHODS[method].triplet == "none":
        raise MbmlError(f"{method} has no triplet loss, so its margin changes nothing; sweep full or no_relabel")
    if not margins or any(m < 0 for m in margins):
        raise MbmlError(f"margins must be given and non-negative, not {list(margins)}")
    for seed in seeds:
        run.require(seed, "teachers")
        if METHODS[method].relabel == "ensemble":
            run.require(seed, "ensembles")


def _label(margin: float) -> str:
    return f"m{margin:g}"


def sweep_seed(run, seed: int, method: str, margin: float, force: bool = False) -> dict:
    """One seed's student with one margin, scored on the training and test tasks (cached in its JSON)."""
    d = run.out / "margin_sweep" / f"seed_{seed}"
    path = d / f"{_label(margin)}.json"
    if path.exists() and not force:
        return io.read_json(path)
    own = margin == run.cfg.distill.triplet_margin and (run.seed_dir(seed) / "eval" / f"{method}.json").exists()
    if own:  # the run's own student: its evaluation as it is
        ev = io.read_json(run.seed_dir(seed) / "eval" / f"{method}.json")
        out = {"margin": margin, "seed": seed, "reused": True, **{s: ev[s] for s in ("train", "test")}}
    else:
        cfg = dataclasses.replace(run.cfg.distill, triplet_margin=float(margin))
        ds = run.dataset(seed)
        key = run.key(seed, "distill")  # the run's student's key: only the margin differs
        ckpt = d / f"{_label(margin)}.ckpt.msgpack"

        def on_eval(params, step, metrics):
            return float(run.evaluate_agent(method, params, run.family.train_tasks,
                                            jax.random.fold_in(key, step))["score"].mean())

        with run.timed(seed, f"margin_sweep_{method}_{_label(margin)}"):
            params, _ = distill(cfg, run.cfg.bcq, method, run.family.act_dim, device_data(ds),
                                run.relabelling(seed, method, ds), run.load_teachers(seed), key, ckpt=ckpt,
                                progress=run.bar(f"seed {seed} {method} margin {margin:g}"), on_eval=on_eval)
            k = run.key(seed, "evaluate")
            out = {"margin": margin, "seed": seed, "reused": False}
            for i, (split, tasks) in enumerate(run.splits()[:2]):
                r = run.evaluate_agent(method, params, tasks, jax.random.fold_in(k, i))
                out[split] = {name: np.asarray(r[name]).tolist() for name in ("score", "last_episode", "returns")}
        remove_checkpoint(ckpt)
    io.write_json(path, out)
    return out


def summarize(method: str, margins, per: dict) -> dict:
    """{margin: [seed results]} -> per margin and split: mean, 95% interval over seeds, per seed."""
    rows = {}
    for m in margins:
        rows[f"{m:g}"] = {split: _split_stats(np.array([r[split]["score"] for r in per[m]]))
                          for split in ("train", "test")}
    return {"method": method, "margins": [float(m) for m in margins], "seeds": [r["seed"] for r in per[margins[0]]],
            "scores": rows}


def markdown(res: dict, figure: str | None = None) -> list[str]:
    from mbml.report import interval_text

    lines = [f"`{res['method']}` distilled again with each triplet margin (seeds {res['seeds']}; the run's own "
             "margin reuses its student); score by the run's protocol, mean over seeds with a 95% interval:", "",
             "| margin | training tasks | test tasks |", "|---|---|---|"]
    for m, v in res["scores"].items():
        lines.append(f"| {m} | {v['train']['mean']:.2f} {interval_text(v['train'])} | "
                     f"{v['test']['mean']:.2f} {interval_text(v['test'])} |")
    if figure:
        lines += ["", f"![triplet-margin sweep]({figure})"]
    return lines


def figure(res: dict, path: Path) -> Path:
    from mbml.figures import COLORS, _save, plt

    fig, ax = plt.subplots(figsize=(6, 4))
    x = np.array(res["margins"])
    for split, style in (("train", "o--"), ("test", "o-")):
        mean = np.array([res["scores"][f"{m:g}"][split]["mean"] for m in x])
        lo, hi = np.array([res["scores"][f"{m:g}"][split]["ci95"] for m in x]).T
        ax.plot(x, mean, style, color=COLORS.get(res["method"]), label=f"{split} tasks")
        ax.fill_between(x, lo, hi, alpha=0.15, color=COLORS.get(res["method"]))
    ax.set_xlabel("triplet margin")
    ax.set_ylabel("score (mean, 95% interval over seeds)")
    ax.set_title(f"Triplet-margin sweep of {res['method']} ({len(res['seeds'])} seeds)")
    ax.set_xticks(x)
    ax.legend(fontsize=8)
    return _save(fig, path)


def run_sweep(out: Path, method: str = "full", margins=MARGINS, seeds=None, force: bool = False,
              progress=None) -> dict:
    """The whole sweep over a run folder's seeds; returns the summary (also written, with the figure)."""
    from mbml.lock import FolderLock
    from mbml.pipeline import Run
    from mbml.status import read_record

    run = Run.open(Path(out), progress=progress, create=False)
    seeds = tuple(seeds or read_record(run.out).get("seeds", [0]))
    margins = tuple(float(m) for m in margins)
    check(run, method, seeds, margins)
    with FolderLock(run.out):
        per = {m: [sweep_seed(run, s, method, m, force) for s in seeds] for m in margins}
        res = summarize(method, margins, per)
        io.write_json(run.out / "margin_sweep" / "results.json", res)
        figure(res, run.out / "figures" / "margin_sweep.png")
        refresh(run.out)
    return res


def refresh(out: Path) -> None:
    """The `margin_sweep` section of a run's results.json and report.md (a run without them is left alone)."""
    path = out / "margin_sweep" / "results.json"
    if not path.exists():
        return
    res = io.read_json(path)
    if (out / "results.json").exists():
        io.write_json(out / "results.json", {**io.read_json(out / "results.json"), "margin_sweep": res})
    if (out / "report.md").exists():
        text = (out / "report.md").read_text()
        head, _, rest = text.partition(f"\n{HEADING}\n")
        tail = rest.split("\n## ", 1)[1] if "\n## " in rest else ""
        md = [head.rstrip("\n"), "", HEADING, "", *markdown(res, "figures/margin_sweep.png"), ""]
        if tail:
            md += ["## " + tail]
        io.atomic_write_bytes(out / "report.md", "\n".join(md).encode())

