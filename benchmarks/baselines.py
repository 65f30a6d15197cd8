"""Gradient steps per second of the baselines beside the MBML student, side by side in one process.

    python benchmarks/baselines.py [--family umaze-goal] [--preset cpu] [--steps 100]

Each learner trains on random transitions of the family's sizes (K tasks, obs/action sizes) with the
preset's nets and batches; one timed call runs `--steps` steps of its jitted chunk (compilation
excluded, best of 3). Printed: steps/s, the ratio to the `neither` student, and the minutes the
preset's training steps would take at that rate (evaluations not counted). Ratios, not absolute
times, are what carries over between runs on these shared machines.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).parent))
from bench import fake_data, timed  # noqa: E402

from mbml import bcq, student as S  # noqa: E402
from mbml.baselines import batch_pearl as BP, contextual_bcq as CB  # noqa: E402
from mbml.config import METHODS, preset  # noqa: E402
from mbml.distill import _chunk as distill_chunk, loss_fn, optimizer  # noqa: E402
from mbml.families import get_family  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", default="umaze-goal")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--steps", type=int, default=100, help="gradient steps per timed call")
    args = ap.parse_args()
    fam, cfg = get_family(args.family), preset(args.family, args.preset)
    k, d, a, n = len(fam.train_tasks), fam.obs_dim, fam.act_dim, 4000
    data = fake_data(k, n, d, a, jax.random.PRNGKey(0))
    print(f"device: {jax.devices()[0]}  jax {jax.__version__}  {args.family} {args.preset}: K={k}, obs {d}, act {a}, "
          f"{args.steps} steps per call")
    rows = []

    teachers = jax.vmap(lambda kk: bcq.init(cfg.bcq, kk, d, a))(jax.random.split(jax.random.PRNGKey(1), k))
    lab = {"accept": jax.random.uniform(jax.random.PRNGKey(4), (k, k, n)) < 0.1,
           "reward": jnp.broadcast_to(data["rewards"][None], (k, k, n))}
    qn = jnp.array([0.0, 1.0])
    dc = cfg.distill
    for m in ("neither", "full"):
        p = S.init(dc, jax.random.PRNGKey(5), d, a)
        met = jax.eval_shape(lambda: loss_fn(dc, cfg.bcq, METHODS[m], a, p, data, lab, teachers, qn,
                                             jax.random.PRNGKey(0))[1])
        carry = {"params": p, "opt": optimizer(dc).init(p), "key": jax.random.PRNGKey(6),
                 "metrics": jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), met)}
        t = timed(lambda c=carry: distill_chunk(dc, cfg.bcq, METHODS[m], a, args.steps, jax.tree.map(jnp.copy, c),
                                                data, lab, teachers, qn))
        rows.append((f"student {m}", args.steps / t, dc.steps))

    for name, mod, section, sample in (
            ("contextual_bcq", CB, cfg.contextual_bcq, lambda c, kk: CB.sample_inputs(c, data, kk)),
            ("batch_pearl", BP, cfg.batch_pearl, lambda c, kk: BP.sample_meta_batch(c, data, kk)[1:])):
        learner = mod.start(section, mod.init(cfg, jax.random.PRNGKey(7), d, a))
        met = jax.eval_shape(lambda: mod.update(section, a, learner, *sample(section, jax.random.PRNGKey(0)),
                                                jax.random.PRNGKey(0))[1])
        carry = {"learner": learner, "key": jax.random.PRNGKey(8),
                 "metrics": jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), met)}
        t = timed(lambda c=carry: mod._chunk(section, a, args.steps, jax.tree.map(jnp.copy, c), data))
        rows.append((name, args.steps / t, section.steps))

    base = rows[0][1]
    print(f"\n{'learner':24s} {'steps/s':>9s} {'vs neither':>10s} {'preset steps':>12s} {'minutes':>8s}")
    for name, sps, steps in rows:
        print(f"{name:24s} {sps:9.1f} {sps / base:9.2f}x {steps:12d} {steps / sps / 60:8.1f}")


if __name__ == "__main__":
    main()
