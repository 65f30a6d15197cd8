"""Resident memory of putting a large dataset on the device (not a test).

Writes a HumanoidDir-M-shaped dataset (376-dim observations, 17-dim actions, horizon 1000) of
`--tasks` x `--transitions` to a temporary folder with `DatasetWriter`, then, each in a fresh
process, loads it memory-mapped and measures the resident memory (RSS) after `transitions.device_data`
and after a jitted read of every observation, and the same with every array copied by `jnp.asarray`
(how `device_data` worked before). At paper size (10 x 600K) the observations alone are 9 GB.

    python benchmarks/memory.py                      # 10 x 130K: 2 GB of observations
    python benchmarks/memory.py --transitions 600000 --how device_data  # paper size: needs ~10 GB of disk
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

OBS, ACT, HORIZON = 376, 17, 1000


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def write(path: Path, tasks: int, n: int) -> None:
    from mbml.dataset_writer import DatasetWriter

    rng = np.random.default_rng(0)
    ends = n // HORIZON
    with DatasetWriter(path, np.arange(tasks, dtype=np.float64)[:, None], n, ends, OBS, ACT) as w:
        for k in range(tasks):
            for e in range(ends):
                obs = rng.standard_normal((HORIZON + 1, OBS), dtype=np.float32)
                timeouts = np.zeros(HORIZON, bool)
                timeouts[-1] = True
                w.append(k, obs[:-1], rng.uniform(-1, 1, (HORIZON, ACT)).astype(np.float32),
                         rng.standard_normal(HORIZON, dtype=np.float32), obs[1:], np.zeros(HORIZON, bool), timeouts)


def measure(path: Path, how: str) -> None:
    import jax
    import jax.numpy as jnp

    from mbml import data
    from mbml.transitions import device_data

    ds = data.load(path)
    before = rss_mb()
    if how == "device_data":
        arrays = device_data(ds)
    else:  # the old way: every array copied
        arrays = {"obs": jnp.asarray(ds.observations), "actions": jnp.asarray(ds.actions),
                  "rewards": jnp.asarray(ds.rewards), "terminals": jnp.asarray(ds.terminals, jnp.float32),
                  "finals": jnp.asarray(ds.final_observations), "final_slot": jnp.asarray(ds.final_slots())}
    jax.block_until_ready(arrays)
    placed = rss_mb()
    total = float(jax.jit(lambda o: o.sum())(arrays["obs"]))  # touches every observation
    print(f"{how:12s} observations {ds.observations.nbytes / 2**20:8.0f} MB | resident after load {before:7.0f} MB, "
          f"after placing {placed:7.0f} MB, after reading every observation {rss_mb():7.0f} MB "
          f"(peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:7.0f} MB; checksum {total:.1f})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=10)
    p.add_argument("--transitions", type=int, default=130_000, help="per task (a multiple of 1000)")
    p.add_argument("--how", nargs="+", choices=("device_data", "asarray"), default=["device_data", "asarray"],
                   help="what to measure (asarray at paper size needs twice the dataset's size in memory)")
    p.add_argument("--measure", choices=("device_data", "asarray"), help=argparse.SUPPRESS)
    p.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure:
        return measure(args.path, args.measure)
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parent.parent) as tmp:
        path = Path(tmp) / "dataset"
        write(path, args.tasks, args.transitions)
        print(f"{args.tasks} tasks x {args.transitions} transitions x {OBS} dims, memory-mapped; resident memory (RSS):")
        for how in args.how:
            subprocess.run([sys.executable, __file__, "--measure", how, "--path", str(path)], check=True)


if __name__ == "__main__":
    main()
