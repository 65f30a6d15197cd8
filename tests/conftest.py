"""Shared fixtures: tiny synthetic datasets and a byte-level snapshot of a folder."""

from __future__ import annotations

import os
from pathlib import Path

# The tests use tiny shapes, so XLA's CPU optimisation passes cost far more than they save: level 0
# compiles the BCQ/student programs ~8x faster (must be set before JAX creates its CPU backend).
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import jax
import numpy as np
import pytest

# Hand-computed values are checked to ~1e-5: on GPUs float32 matmuls default to TF32 (seen on an
# H100/H200: relative errors of 1e-4), so the tests ask for full float32 precision everywhere.
jax.config.update("jax_default_matmul_precision", "highest")

from mbml.data import Dataset


def synthetic_dataset(k: int = 3, n: int = 16, obs_dim: int = 2, act_dim: int = 2, extras: bool = True,
                      seed: int = 0, meta: dict | None = None) -> Dataset:
    """A small valid dataset in the mbml format: random finite values, one episode end per 8 steps (a
    random next state there), next states elsewhere the following states."""
    rng = np.random.default_rng(seed)
    f32 = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    timeouts = np.zeros((k, n), bool)
    timeouts[:, 7::8] = True
    terminals = np.zeros((k, n), bool)
    terminals[0, 3] = True
    obs, act, rew, nxt = f32(k, n, obs_dim), np.clip(f32(k, n, act_dim), -1, 1), f32(k, n), f32(k, n, obs_dim)
    nxt[:, :-1] = np.where((terminals | timeouts)[:, :-1, None], nxt[:, :-1], obs[:, 1:])
    return Dataset.from_arrays(
        observations=obs, actions=act, rewards=rew, next_observations=nxt, terminals=terminals, timeouts=timeouts,
        tasks=rng.normal(size=(k, 2)),
        extras={"x_velocity": f32(k, n), "xy": f32(k, n, 2)} if extras else {},
        meta=dict(meta if meta is not None else {"seed": seed, "family": "synthetic", "note": "ü"}))


@pytest.fixture(scope="session")
def make_dataset():
    return synthetic_dataset


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative path -> bytes)."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(name="snapshot")
def snapshot_fixture():
    return snapshot


@pytest.fixture(scope="session")
def smoke_full_run(tmp_path_factory):
    """A smoke run of the toy with the `full` student (every stage), shared by the tests that read one."""
    from mbml.cli import run_pipeline

    out = tmp_path_factory.mktemp("smoke-full") / "run"
    run_pipeline(out, "point-nav", "smoke", seeds=(0,), methods=("full",), quiet=True, workers=1)
    return out
