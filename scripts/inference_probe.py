"""Where a point-nav student loses return: acting vs inferring the task (docs/toy-analysis.md).

    python scripts/inference_probe.py runs/point-nav-cpu --seed 0 --method full

Prints, on the training goals:
  1. the student's return with z = the posterior mean of N random transitions of the task's own
     dataset (N = 20, 128) and with z sampled from that posterior: how well it acts given the task;
  2. the evaluation protocol (spec §6) per episode, with z sampled (as specified) or set to the
     posterior mean, and the posterior's mean standard deviation;
  3. the median angle between each episode's final position and the goal (training goals lie about
     18 degrees apart), and whether the mirror ambiguity of a straight first episode explains it;
  4. for runs that end a later episode 3-15 degrees off, how often the next episode moves towards
     the goal (50% = it cannot tell on which side the goal lies) and by how much of the error.
Point-nav only (it needs the pure-JAX environment and 2-D goals). Runs in about a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from mbml import evaluate, rollout, student as S
from mbml.pipeline import Run
from mbml.transitions import device_data, take


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--method", default="full")
    ap.add_argument("--draws", type=int, default=16, help="protocol runs per goal")
    args = ap.parse_args()

    run = Run.open(args.run)
    fam, cfg, ev, phi = run.family, run.cfg.distill, run.cfg.eval, run.cfg.bcq.phi
    if fam.name != "point-nav":
        raise SystemExit("error: the probe is for point-nav run folders")
    params = run.load_params(args.seed, args.method)
    data = device_data(run.dataset(args.seed))
    tasks = jnp.asarray(fam.train_tasks, jnp.float32)
    k = tasks.shape[0]
    key = jax.random.PRNGKey(0)

    def act_with(z):
        return lambda o, kk: S.act(cfg, fam.act_dim, phi, ev.num_candidates, params, o, z, kk)

    @functools.partial(jax.jit, static_argnums=1)
    def dataset_posterior(kk, size):
        idx = jax.random.randint(kk, (k, size), 0, data["obs"].shape[1])
        b = take(data, idx)
        return S.posterior(*S.encode(cfg, params.encoder, S.context(b["obs"], b["actions"], b["rewards"], b["next_obs"])))

    returns_with = jax.jit(jax.vmap(lambda t, z, kk: rollout.mean_return(fam, act_with(z), t, kk, 8)))
    print(f"{args.run} seed {args.seed} `{args.method}`, training goals\n")
    print("1. acting with z from the task's own dataset transitions (mean return)")
    for size in (20, 128):
        mu, var = dataset_posterior(jax.random.PRNGKey(size), size)
        r_mean = returns_with(tasks, mu, jax.random.split(key, k)).mean()
        z = mu + jnp.sqrt(var) * jax.random.normal(jax.random.PRNGKey(100 + size), mu.shape)
        r_samp = returns_with(tasks, z, jax.random.split(key, k)).mean()
        print(f"   {size:4d} transitions: z = posterior mean {float(r_mean):7.2f}, z sampled {float(r_samp):7.2f}, "
              f"posterior std {float(jnp.sqrt(var).mean()):.2f}")

    keys = jax.random.split(jax.random.PRNGKey(7), args.draws)
    agent = run.agent(args.method)
    goal_angle = np.arctan2(fam.train_tasks[:, 1], fam.train_tasks[:, 0])
    print(f"\n2. the protocol, per episode (mean over {args.draws} runs per goal; score = episodes 3-5)")
    for use_mean in (False, True):
        runs = [evaluate.protocol(fam, agent, params, tasks, kk, ev, use_mean=use_mean) for kk in keys]
        out = {name: np.stack([np.asarray(r[name]) for r in runs]) for name in runs[0]}
        r, s, ends = (np.asarray(out[name]) for name in ("returns", "posterior_std", "last_obs"))
        label = "z = posterior mean " if use_mean else "z sampled (spec)   "
        print(f"   {label} returns {np.round(r.mean((0, 1)), 2)}  score {r[..., 2:].mean():.2f}  "
              f"posterior std {np.round(s.mean((0, 1)), 2)}")
        if not use_mean:
            angle = np.arctan2(ends[..., 1], ends[..., 0])  # [draws, K, E]
            err = np.degrees(np.abs(angle - goal_angle[None, :, None]))
            print(f"\n3. median |angle| between final position and goal, per episode: {np.round(np.median(err, (0, 1)), 1)}")
            first = angle[..., 0]
            far = np.abs(first - goal_angle[None]) > np.radians(15)
            mirror = 2 * first - goal_angle[None]  # the goal's reflection in the first episode's line
            ambiguous = far & (mirror > goal_angle.min()) & (mirror < goal_angle.max())
            for name, m in (("mirror goal on the arc (ambiguous)", ambiguous), ("mirror goal off the arc", far & ~ambiguous)):
                if m.any():
                    print(f"   first episode off by > 15 deg, {name:36s}: n = {int(m.sum()):3d}, "
                          f"episode-2 median error {np.median(err[..., 1][m]):5.1f} deg, score {r[..., 2:].mean(-1)[m].mean():.2f}")
            # How episode 2 corrects episode 1: 1 = lands on the goal, 0 = stays, -1 = goes to the mirror.
            ratio = (angle[..., 1] - first) / (goal_angle[None] - first)
            q = np.percentile(ratio[far], [25, 50, 75])
            print(f"   episode 2's correction of episode 1 (1 = on the goal, 0 = stays, < 0 = wrong way), "
                  f"first episode off by > 15 deg: quartiles {np.round(q, 2)}, wrong way {np.mean(ratio[far] < 0):.0%}")
            # Later episodes: does the agent move towards the goal, and by how much of its error?
            # An agent's own straight path from the origin earns the same rewards for a goal and for
            # its mirror image in that path, so rewards alone cannot say on which side the goal lies.
            print("   later episodes, runs whose episode e ended 3-15 deg off the goal: "
                  "episode e+1 moves towards the goal / moves by (median) this fraction of the error")
            for e in (1, 2, 3):
                signed = goal_angle[None] - angle[..., e]
                m = (np.abs(signed) > np.radians(3)) & (np.abs(signed) < np.radians(15))
                step = (angle[..., e + 1] - angle[..., e])[m]
                print(f"     e = {e + 1}: n = {int(m.sum()):3d}, towards the goal {np.mean(np.sign(step) == np.sign(signed[m])):.0%}, "
                      f"|move| / |error| median {np.median(np.abs(step) / np.abs(signed[m])):.2f}")
            print()


if __name__ == "__main__":
    main()
