"""Which SAC collects the best datasets per CPU-second? Variants side by side, one task per family.

    python benchmarks/collectors.py [--families halfcheetah-vel ant-dir walker-param] [--steps 30000]
        [--seeds 3] [--variants today tuned ...] [--out runs/collectors] [--report docs]
    python benchmarks/collectors.py --cost-only      # only the alternating cost-per-step rounds
    python benchmarks/collectors.py --report-only --report docs   # table and figure from OUT

Each variant is the family's `cpu` SAC config with the overrides in VARIANTS. The seeds of one
(family, variant) run as one collection of the family's first training task repeated `--seeds`
times (independent learners lifted over that axis, as the collector lifts tasks), so their returns
come from exactly the code that collects datasets. Learning curves: mean return of the episodes
ending in each horizon of env steps. Final return: mean return of the episodes ending in the last tenth of the env steps
(each horizon of steps weighted equally). Cost:
wall ms per env step of the lifted collection, measured in separate short rounds that alternate the
variants (median of `--rounds`), because the long runs share the machine with whatever else runs.

Each (family, variant) is kept in OUT/FAMILY/VARIANT.json as soon as it is done, so a stopped
comparison continues where it stopped. `--report DIR` writes the table into DIR/collectors.md
(between its table markers; the text around them is kept) and DIR/collectors.png, from whatever is done.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import jax
import numpy as np

from mbml.config import SACConfig, preset
from mbml.families import get_family
from mbml.hostenv import collect_host

VARIANTS = {
    "today": {},
    "tuned": dict(lr=1e-3, init_temperature=0.1, warmup="uniform"),
    "tuned-b256": dict(lr=1e-3, init_temperature=0.1, warmup="uniform", batch_size=256),
    "layernorm": dict(lr=1e-3, init_temperature=0.1, warmup="uniform", critic="layernorm"),
    "layernorm-n3": dict(lr=1e-3, init_temperature=0.1, warmup="uniform", critic="layernorm", n_step=3),
    "crossq": dict(lr=1e-3, init_temperature=0.1, warmup="uniform", critic="crossq", adam_b1=0.5),
    "today-layernorm": dict(critic="layernorm"),
    "today-crossq": dict(critic="crossq", adam_b1=0.5),
    "today-n3": dict(n_step=3),
}
"""Overrides of the family's `cpu` SACConfig. `today` is the preset as it was (the authors' settings
at 256-wide critics and batch 128); the others use the settings tuned SAC benchmarks use (lr 1e-3,
uniform warm-up) with the temperature starting at 0.1; `today-*` change only the critic or the returns
of `today` (added after the tuned settings lost on ant-dir, to separate the two)."""


AUTHORS = {name: getattr(SACConfig(), name)
           for name in ("lr", "init_temperature", "learn_temperature", "warmup", "critic", "n_step", "adam_b1")}
"""The authors' collector settings (SACConfig's defaults), which `today` means whatever the preset now uses."""


def config(family: str, variant: str, steps: int):
    cfg = dataclasses.replace(preset(family, "cpu").sac, **AUTHORS)
    return dataclasses.replace(cfg, total_steps=steps, warmup_steps=min(cfg.warmup_steps, steps // 10),
                               **VARIANTS[variant])


def seeds_family(family: str, seeds: int):
    fam = get_family(family)
    return dataclasses.replace(fam, train_tasks=np.repeat(fam.train_tasks[:1], seeds, 0))


def learning_curve(family: str, variant: str, steps: int, seeds: int, seed: int) -> dict:
    fam, cfg = seeds_family(family, seeds), config(family, variant, steps)
    rows = []
    t0 = time.perf_counter()
    collect_host(fam, cfg, jax.random.PRNGKey(seed), log=lambda step, r: rows.append((step, r)))
    wall = time.perf_counter() - t0
    at = np.array([step for step, _ in rows])
    returns = np.array([r["episode_return"] for _, r in rows])  # [points, seeds], NaN: no episode ended
    last = at > steps - steps // 10
    return {"family": family, "variant": variant, "steps": steps, "seeds": seeds, "config": dataclasses.asdict(cfg),
            "wall_s": wall, "at": at.tolist(), "returns": np.where(np.isfinite(returns), returns, None).tolist(),
            "final_return": np.nanmean(returns[last], 0).tolist(),
            "alpha": np.nanmean([r["alpha"] for _, r in rows[-5:]], 0).tolist(),
            "q": np.nanmean([r["q"] for _, r in rows[-5:]], 0).tolist()}


def cost_rounds(families, variants, seeds: int, rounds: int, steps: int = 600) -> dict:
    """Median wall ms per env step of each variant's lifted update-phase collection, alternating."""
    out = {f: {v: [] for v in variants} for f in families}
    for f in families:
        fam = seeds_family(f, seeds)
        for v in variants:  # compile once
            cfg = dataclasses.replace(config(f, v, steps), warmup_steps=50)
            collect_host(fam, cfg, jax.random.PRNGKey(0))
        for _ in range(rounds):
            for v in variants:
                cfg = dataclasses.replace(config(f, v, steps), warmup_steps=50)
                t = time.perf_counter()
                collect_host(fam, cfg, jax.random.PRNGKey(1))
                out[f][v].append(1000 * (time.perf_counter() - t) / steps)
    return {f: {v: float(np.median(ms)) for v, ms in row.items()} for f, row in out.items()}


def report(out: Path, docs: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = {}
    for path in sorted(out.glob("*/*.json")):
        r = json.loads(path.read_text())
        results.setdefault(r["family"], {})[r["variant"]] = r
    cost = json.loads((out / "cost.json").read_text()) if (out / "cost.json").exists() else {}
    families = [f for f in results]
    fig, axes = plt.subplots(1, len(families), figsize=(5 * len(families), 3.8), squeeze=False)
    lines = ["| family | variant | final return (mean of seeds; per seed) | ms per env step (x today) | "
             "gain in final return over `today`, at its cost |", "|---|---|---|---|---|"]
    for ax, f in zip(axes[0], families):
        base = cost.get(f, {}).get("today")
        for v in VARIANTS:
            if v not in results[f]:
                continue
            r = results[f][v]
            ret = _smooth(np.asarray(r["returns"], float))
            x = np.asarray(r["at"])
            ax.plot(x, np.nanmean(ret, 1), label=v)
            ax.fill_between(x, np.nanmin(ret, 1), np.nanmax(ret, 1), alpha=0.12)
            ms = cost.get(f, {}).get(v)
            ratio = f"{ms:.2f} ({ms / base:.2f}x)" if ms and base else "–"
            fin = np.asarray(r["final_return"])
            lines.append(f"| {f} | `{v}` | {fin.mean():.1f}; {', '.join(f'{x:.0f}' for x in fin)} | {ratio} | "
                         f"{_per_minute(results[f], cost.get(f, {}), v)} |")
        zero = zero_action_return(f)
        ax.axhline(zero, color="k", ls=":", lw=1, label=f"zero actions ({zero:.0f})")
        ax.set_title(f"{f}, task 0 ({len(r['final_return'])} seeds; band: min-max)")
        ax.set_xlabel("env steps")
        ax.set_ylabel("episode return")
        ax.legend(fontsize=7)
    fig.tight_layout()
    docs.mkdir(parents=True, exist_ok=True)
    fig.savefig(docs / "collectors.png", dpi=110)
    page = docs / "collectors.md"
    text = page.read_text() if page.exists() else f"{TABLE_START}\n{TABLE_END}\n"
    head, _, rest = text.partition(TABLE_START)
    _, _, tail = rest.partition(TABLE_END)
    page.write_text(f"{head}{TABLE_START}\n" + "\n".join(lines) + f"\n{TABLE_END}{tail}")
    print("\n".join(lines))


TABLE_START, TABLE_END = "<!-- table: benchmarks/collectors.py --report-only --report docs -->", "<!-- end of table -->"


def zero_action_return(family: str, episodes: int = 3) -> float:
    """Mean return of the all-zero-actions policy on the family's first training task (standing still)."""
    import jax.numpy as jnp

    from mbml.hostenv import mean_returns

    fam = get_family(family)
    policy = lambda obs, key: jnp.zeros((obs.shape[0], fam.act_dim))  # noqa: E731
    return float(mean_returns(fam, fam.train_tasks[:1], policy, jax.random.PRNGKey(0), episodes)[0])


def _smooth(returns: np.ndarray, width: int = 10) -> np.ndarray:
    """Running mean over `width` logging points (NaN-aware), per seed."""
    out = np.full_like(returns, np.nan)
    for i in range(len(returns)):
        with np.errstate(all="ignore"):
            out[i] = np.nanmean(returns[max(0, i - width + 1):i + 1], 0)
    return out


def _per_minute(rows: dict, cost: dict, v: str) -> str:
    """Gain over `today` in final return, divided by the variant's relative cost: how much more a
    CPU-minute of this variant buys (only meaningful where the gain is positive)."""
    if "today" not in rows or not cost.get(v) or not cost.get("today"):
        return "–"
    gain = np.mean(rows[v]["final_return"]) - np.mean(rows["today"]["final_return"])
    return f"{gain:+.1f} at {cost[v] / cost['today']:.2f}x cost"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", nargs="+", default=["halfcheetah-vel", "ant-dir", "walker-param"])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--steps", type=int, default=30_000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("runs/collectors"))
    ap.add_argument("--report", type=Path, default=None, help="write DIR/collectors.png and the table from OUT")
    ap.add_argument("--cost-only", action="store_true")
    ap.add_argument("--curves-only", action="store_true")
    ap.add_argument("--report-only", action="store_true", help="only write the report from OUT (with --report)")
    args = ap.parse_args()
    if args.report_only:
        return report(args.out, args.report or Path("docs"))
    if not args.cost_only:
        for f in args.families:
            for v in args.variants:
                path = args.out / f / f"{v}.json"
                if path.exists():
                    continue
                r = learning_curve(f, v, args.steps, args.seeds, args.seed)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(r))
                print(f"{f} {v}: final {np.round(r['final_return'], 1)} in {r['wall_s']:.0f} s", flush=True)
    if not args.curves_only:
        cost = cost_rounds(args.families, args.variants, args.seeds, args.rounds)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "cost.json").write_text(json.dumps(cost, indent=1))
        print(json.dumps(cost, indent=1))
    if args.report is not None:
        report(args.out, args.report)


if __name__ == "__main__":
    main()
