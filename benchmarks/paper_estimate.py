"""Estimate the wall time of a full `paper` run of a family from two short probes (not a test).

    python benchmarks/paper_estimate.py --family halfcheetah-vel [--steps 1000] [--out runs/estimate]

Runs every stage of the family's `paper` preset (the authors' network sizes) with each learner's
steps at `--steps` (SAC: the warm-up plus that many) and one evaluation per learner, then the
training stages again at twice the steps (the evaluations cost the same), each probe in a fresh
process, in run folders OUT/FAMILY-paper-N and OUT/FAMILY-paper-2N. Per stage, the two times give a line
t = fixed + per_step x steps (`fixed`: compilation, the one evaluation, loading); the estimate of the
full stage is

    fixed + per_step x (full steps - probe steps) + (evaluations at full length - 1) x one evaluation

where one evaluation is timed by the probe's own `evaluate_full` stage (the protocol on the test
tasks; for the teachers the per-task teacher evaluation in `references`, whose first third it is).
Prints the table and writes OUT/FAMILY.json. On 2 CPU cores use small --steps (it is for
accelerators: scripts/gpu_check.sh runs it).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

STAGES = ("collect", "teachers", "ensembles", "distill_full", "evaluate_full", "references")


def probe_overrides(cfg, steps: int) -> list[str]:
    """`--set` values of a probe: every learner at `steps`, one evaluation each."""
    sets = [f"sac.total_steps={cfg.sac.warmup_steps + steps}", f"bcq.steps={steps}", f"bcq.eval_every={steps}",
            f"ensemble.steps={steps}", f"distill.steps={steps}", f"distill.eval_every={steps}"]
    if cfg.bcq.dataset_size:
        sets.append(f"bcq.dataset_size={cfg.sac.warmup_steps + steps}")
    if cfg.ensemble.next_state:
        sets.append(f"ensemble.next_state_steps={steps}")
    return sets


def full_steps(cfg) -> dict:
    """Per stage: (steps at full length, evaluations at full length)."""
    ens = cfg.ensemble.steps + (cfg.ensemble.next_state_steps if cfg.ensemble.next_state else 0)
    return {"collect": (cfg.sac.total_steps - cfg.sac.warmup_steps, 1),
            "teachers": (cfg.bcq.steps, math.ceil(cfg.bcq.steps / cfg.bcq.eval_every)),
            "ensembles": (ens, 1),
            "distill_full": (cfg.distill.steps, math.ceil(cfg.distill.steps / cfg.distill.eval_every)),
            "evaluate_full": (0, 1), "references": (0, 1)}


TRAINING = ("collect", "teachers", "ensembles", "distill")


def probe(family: str, preset_name: str, steps: int, out: Path, stages=(*TRAINING, "evaluate")) -> dict:
    """One probe in a fresh process (each pays its own compilation); its stage times."""
    import subprocess
    import sys

    from mbml.config import preset

    sets = probe_overrides(preset(family, preset_name), steps)
    folder = out / f"{family}-{preset_name}-{steps}"
    code = ("import sys; from mbml.orchestrate import run_pipeline; "
            "run_pipeline(sys.argv[1], sys.argv[2], sys.argv[3], (0,), ('full',), quiet=True, "
            "stages=tuple(sys.argv[4].split(',')), overrides=tuple(sys.argv[5:]))")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, str(folder), family, preset_name, ",".join(stages), *sets], check=True)
    timings = json.loads((folder / "seed_0" / "timings.json").read_text())
    print(f"probe at {steps} steps: {time.perf_counter() - t0:.0f} s", flush=True)
    return timings


def estimate(cfg, n: int, t1: dict, t2: dict) -> dict:
    """Per stage {"probe_s", "per_step_s", "fixed_s", "estimate_s"} from probes at n and 2n steps."""
    full = full_steps(cfg)
    ens_scale = 2 if cfg.ensemble.next_state else 1  # both ensembles ran `n` steps each
    one_eval = {"teachers": t1.get("references", 0.0) / 3, "distill_full": t1.get("evaluate_full", 0.0)}
    rows = {}
    for stage in STAGES:
        if stage not in t1:
            continue
        steps_full, evals = full[stage]
        probe_steps = n * (ens_scale if stage == "ensembles" else 1)
        per_step = max(t2[stage] - t1[stage], 0.0) / probe_steps if stage in t2 else 0.0
        fixed = t1[stage] - per_step * probe_steps
        est = fixed + per_step * max(steps_full - probe_steps, 0) + (evals - 1) * one_eval.get(stage, 0.0)
        rows[stage] = {"probe_s": t1[stage], "probe_2x_s": t2.get(stage, float("nan")), "per_step_s": per_step, "fixed_s": fixed,
                       "full_steps": steps_full, "evaluations": evals, "estimate_s": est}
    return rows


def main() -> None:
    import jax

    from mbml.config import preset

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", default="halfcheetah-vel")
    ap.add_argument("--steps", type=int, default=1000, help="each learner's steps in the first probe")
    ap.add_argument("--out", type=Path, default=Path("runs/estimate"))
    ap.add_argument("--preset", default="paper", help="another preset's full run (smoke: a check of this script)")
    args = ap.parse_args()
    cfg = preset(args.family, args.preset)
    t1 = probe(args.family, args.preset, args.steps, args.out)
    t2 = probe(args.family, args.preset, 2 * args.steps, args.out, TRAINING)  # evaluations cost the same
    rows = estimate(cfg, args.steps, t1, t2)
    total = sum(r["estimate_s"] for r in rows.values())
    device = str(jax.devices()[0])
    print(f"\n{args.family}, {args.preset} preset, one seed, method full, on {device} (jax {jax.__version__}):")
    print(f"{'stage':15s} {'probe s':>8s} {'2x s':>8s} {'s/step':>9s} {'full steps':>10s} {'evals':>5s} {'estimate':>10s}")
    for stage, r in rows.items():
        print(f"{stage:15s} {r['probe_s']:8.0f} {r['probe_2x_s']:8.0f} {r['per_step_s']:9.4f} {r['full_steps']:10d} "
              f"{r['evaluations']:5d} {r['estimate_s'] / 3600:9.2f}h")
    print(f"{'total':15s} {'':>8s} {'':>8s} {'':>9s} {'':>10s} {'':>5s} {total / 3600:9.2f}h")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.family}.json").write_text(json.dumps(
        {"family": args.family, "preset": args.preset, "device": device, "jax": jax.__version__, "probe_steps": args.steps,
         "date": time.strftime("%Y-%m-%d"), "stages": rows, "total_s": total}, indent=2) + "\n")


if __name__ == "__main__":
    main()
