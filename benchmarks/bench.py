"""Speed of mbml's hot loops on this machine, measured side by side in one run (not a test).

    python benchmarks/bench.py [--preset demo] [--steps 200]
    python benchmarks/bench.py --family halfcheetah-vel --preset cpu --only teachers --steps 50

Prints: BCQ teacher updates/s for K tasks lifted over the task axis (vmap and lax.map) against a
Python loop of K single-task learners; distillation steps/s per method; pure-JAX toy env steps/s;
and achieved GFLOP/s (XLA's cost analysis) beside this machine's measured fp32 matmul peak.
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp

from mbml import bcq, rollout, student as S
from mbml.config import preset
from mbml.distill import METHODS, _chunk as distill_chunk, loss_fn, optimizer
from mbml.families import get_family
from mbml.teachers import _chunk as teacher_chunk, sample


def timed(fn, *args, repeat=3):
    """Best wall time of fn(*args) after one warm-up call (compilation excluded)."""
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t)
    return best


def flops_of(fn, *args) -> float:
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", float("nan")))


def matmul_peak(n=2048) -> float:
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    return 2 * n**3 / timed(f, a, repeat=5) / 1e9


def fake_data(k, n, obs_dim, act_dim, key):
    """`transitions.device_data` of random transitions: one episode per task."""
    ks = jax.random.split(key, 4)
    return {"obs": jax.random.normal(ks[0], (k, n, obs_dim)), "actions": jax.random.uniform(ks[1], (k, n, act_dim), minval=-1, maxval=1),
            "rewards": jax.random.normal(ks[2], (k, n)), "terminals": jnp.zeros((k, n)),
            "finals": jax.random.normal(ks[3], (k, 1, obs_dim)),
            "final_slot": jnp.full((k, n), -1, jnp.int32).at[:, -1].set(0)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", default="point-nav", help="network sizes, K and dimensions of this family's preset")
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--steps", type=int, default=200, help="gradient steps per timed call")
    ap.add_argument("--only", choices=("teachers",), help="time the teachers (lifts against the loop) alone")
    args = ap.parse_args()
    fam = get_family(args.family)
    cfg = preset(args.family, args.preset)
    k, n, d, a = fam.train_tasks.shape[0], 4000, fam.obs_dim, fam.act_dim
    data = fake_data(k, n, d, a, jax.random.PRNGKey(0))
    peak = matmul_peak()
    print(f"device: {jax.devices()[0]}  jax {jax.__version__}  fp32 matmul peak (2048^3): {peak:.1f} GFLOP/s")
    print(f"{args.family}, preset {args.preset}: K={k} tasks, BCQ nets {cfg.bcq.critic_hidden}, batch {cfg.bcq.batch_size}, "
          f"{args.steps} steps per call\n")

    # --- teachers: lifted over the task axis vs a Python loop of single-task learners
    teachers = jax.vmap(lambda kk: bcq.init(cfg.bcq, kk, d, a))(jax.random.split(jax.random.PRNGKey(1), k))
    fresh = lambda: {"teacher": jax.tree.map(jnp.copy, teachers), "key": jax.random.split(jax.random.PRNGKey(2), k)}  # noqa: E731
    rows = []
    for mode in ("vmap", "map"):
        t = timed(lambda: teacher_chunk(cfg.bcq, a, mode, args.steps, fresh(), data))
        rows.append((f"teachers, lift={mode}", k * args.steps / t))

    @functools.partial(jax.jit, static_argnums=(0,))
    def single(length, teacher, data_k, key):
        def body(t, kk):
            k_b, k_u = jax.random.split(kk)
            return bcq.update(cfg.bcq, t, sample(data_k, k_b, cfg.bcq.batch_size), k_u, a)[0], None
        return jax.lax.scan(body, teacher, jax.random.split(key, length))[0]

    per_task = [jax.tree.map(lambda x: x[i], teachers) for i in range(k)]
    per_data = [jax.tree.map(lambda x: x[i], data) for i in range(k)]

    def loop():
        return [single(args.steps, per_task[i], per_data[i], jax.random.PRNGKey(i)) for i in range(k)]

    t_loop = timed(loop)
    rows.append(("teachers, Python loop of K", k * args.steps / t_loop))
    one_step = lambda t, dk, kk: bcq.update(cfg.bcq, t, sample(dk, kk, cfg.bcq.batch_size), kk, a)[0]  # noqa: E731
    f_step = flops_of(jax.vmap(one_step), teachers, data, jax.random.split(jax.random.PRNGKey(3), k))
    print(f"{'what':38s} {'updates/s':>12s} {'GFLOP/s':>9s} {'vs loop':>8s}")
    for name, ups in rows:
        print(f"{name:38s} {ups:12.0f} {f_step / k * ups / 1e9:9.2f} {ups / rows[-1][1]:7.2f}x")

    if args.only == "teachers":
        return
    # --- distillation
    print()
    dc = cfg.distill
    lab = {"accept": jax.random.uniform(jax.random.PRNGKey(4), (k, k, n)) < 0.4, "reward": data["rewards"][None].repeat(k, 0)}
    qn = jnp.array([0.0, 1.0])
    for m in ("full", "neither", "no_relabel"):
        p = S.init(dc, jax.random.PRNGKey(5), d, a)
        met = jax.eval_shape(lambda: loss_fn(dc, cfg.bcq, METHODS[m], a, p, data, lab, teachers, qn, jax.random.PRNGKey(0))[1])
        carry = {"params": p, "opt": optimizer(dc).init(p), "key": jax.random.PRNGKey(6),
                 "metrics": jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), met)}
        fresh_c = lambda carry=carry: jax.tree.map(jnp.copy, carry)  # noqa: E731
        t = timed(lambda: distill_chunk(dc, cfg.bcq, METHODS[m], a, args.steps, fresh_c(), data, lab, teachers, qn))
        fl = flops_of(lambda pp: jax.grad(lambda q: loss_fn(dc, cfg.bcq, METHODS[m], a, q, data, lab, teachers, qn,
                                                            jax.random.PRNGKey(0))[0])(pp), p)
        sps = args.steps / t
        print(f"{'distill ' + m:38s} {sps:12.1f} steps/s {fl * sps / 1e9:7.2f} GFLOP/s")

    if args.family != "point-nav":  # the MuJoCo families step on the host (benchmarks/envs.py)
        return
    # --- environment
    print()
    episodes = 200
    rand = lambda o, kk: jax.random.uniform(kk, (a,), minval=-1, maxval=1)  # noqa: E731
    tasks = jnp.asarray(fam.train_tasks, jnp.float32)
    f_env = jax.jit(lambda key: jax.vmap(lambda t, kk: jax.vmap(lambda k2: rollout.episode(fam, rand, t, k2)[0])(
        jax.random.split(kk, episodes)))(tasks, jax.random.split(key, k)))
    t = timed(f_env, jax.random.PRNGKey(7))
    print(f"{'point-nav env (jitted, random policy)':38s} {k * episodes * fam.horizon / t:12.0f} env steps/s")
    print(f"\nfp32 matmul peak {peak:.1f} GFLOP/s; small per-task nets reach a fraction of it (memory- and "
          "latency-bound).")


if __name__ == "__main__":
    main()
