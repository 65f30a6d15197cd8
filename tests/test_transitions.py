"""Next observations derived on the device (mbml.transitions) and in the collectors' replay buffers:
every gather gives the next observations a full stored copy gave, bit for bit, without that copy."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbml import collect as C, hostenv, io
from mbml.config import preset
from mbml.data import Dataset
from mbml.errors import MbmlError
from mbml.families import get_family
from mbml.transitions import device_data, gather, sample, take
from test_data import chained, raises_one_line

FIELDS = ("obs", "actions", "rewards", "next_obs", "terminals")


def reference(a: dict) -> dict:
    """The arrays the learners sampled from before version 2: next observations stored in full."""
    return {"obs": a["observations"], "actions": a["actions"], "rewards": a["rewards"],
            "next_obs": a["next_observations"], "terminals": a["terminals"].astype(np.float32)}


def assert_batch(got: dict, want: dict) -> None:
    assert set(got) == set(FIELDS)
    for f in FIELDS:
        g, w = np.asarray(got[f]), np.asarray(want[f])
        assert g.dtype == w.dtype and g.shape == w.shape, f
        assert g.tobytes() == w.tobytes(), f


# ------------------------------------------------------------------------------------ device data


def test_device_data_holds_no_second_copy_of_the_observations(make_dataset):
    ds = make_dataset(k=3, n=64, obs_dim=5)
    data = device_data(ds)
    assert [name for name, v in data.items() if v.ndim == 3 and v.shape[1] == 64 and v.shape[2] == 5] == ["obs"]
    k, n, d = 3, 64, 5
    m = ds.final_observations.shape[1]
    assert m == 9  # task 0: ends at 3, 7, 15, ..., 63 (8 timeouts and a terminal)
    assert data["finals"].shape == (k, m, d) and data["final_slot"].dtype == jnp.int32
    nbytes = {name: v.nbytes for name, v in data.items()}
    assert nbytes == {"obs": 4 * k * n * d, "actions": 4 * k * n * 2, "rewards": 4 * k * n, "terminals": 4 * k * n,
                      "finals": 4 * k * m * d, "final_slot": 4 * k * n}


@pytest.fixture(scope="module")
def arrays():
    a = chained(k=3, n=40, obs_dim=4, seed=1)
    a["terminals"][2, 39] = True  # a task whose last transition ends an episode
    return a


def test_gather_take_and_sample_match_a_full_copy(arrays):
    ref = reference(arrays)
    data = device_data(Dataset.from_arrays(**arrays))
    idx = jnp.array([[39, 0, 2, 6, 7, 4, 5, 39], [4, 4, 3, 5, 39, 38, 0, 1], [39, 38, 20, 2, 6, 4, 0, 11]])
    for t in range(3):
        one = jax.tree.map(lambda x: x[t], data)
        assert_batch(jax.jit(gather)(one, idx[t]), {f: v[t][np.asarray(idx[t])] for f, v in ref.items()})
    many = idx.reshape(3, 2, 4)  # any index shape
    assert_batch(jax.jit(take)(data, many), {f: np.stack([v[t][np.asarray(many[t])] for t in range(3)])
                                             for f, v in ref.items()})
    # sample draws the indices as before (randint over the N transitions): the same random stream
    key = jax.random.PRNGKey(5)
    pick = np.asarray(jax.random.randint(key, (256,), 0, 40))
    for t in range(3):
        one = jax.tree.map(lambda x: x[t], data)
        assert_batch(jax.jit(sample, static_argnums=2)(one, key, 256), {f: v[t][pick] for f, v in ref.items()})


def test_sample_from_rows_matches_sampling_a_compacted_copy(arrays):
    """The next-state ensembles train on all but the held-out transitions: drawn through `rows`, the
    batches are those drawn from the kept transitions copied out (the code before version 2)."""
    ref = reference(arrays)
    rows = np.flatnonzero(np.arange(40) % 3 != 0)
    data = device_data(Dataset.from_arrays(**arrays))
    key = jax.random.PRNGKey(9)
    pick = np.asarray(jax.random.randint(key, (128,), 0, len(rows)))
    for t in range(3):
        one = {**jax.tree.map(lambda x: x[t], data), "rows": jnp.asarray(rows, jnp.int32)}
        assert_batch(jax.jit(sample, static_argnums=2)(one, key, 128), {f: v[t][rows][pick] for f, v in ref.items()})


# ------------------------------------------------------------------------------ collection buffers


def _point_nav(total: int):
    fam = get_family("point-nav")
    fam = dataclasses.replace(fam, train_tasks=fam.train_tasks[:3])
    cfg = dataclasses.replace(preset("point-nav", "smoke").sac, total_steps=total, warmup_steps=20, batch_size=16)
    return fam, cfg


class Stop(Exception):
    pass


def test_jitted_collection_derives_the_true_next_observations(tmp_path):
    """Mid-collection the SAC sampler sees the newest transition's next state (row t + 1, written at
    step t); the dataset's next states follow the toy's dynamics, also at episode ends (not the reset);
    a collection resumed from its checkpoint gives the same data."""
    from flax import serialization

    from mbml.families.point_nav import STEP_SIZE

    fam, cfg = _point_nav(60)
    ds = C.collect(fam, cfg, jax.random.PRNGKey(0), chunk=30)
    assert ds.timeouts[:, 19::20].all() and ds.timeouts.sum() == 9 and ds.final_observations.shape == (3, 3, 2)
    nxt = np.stack([ds.next_obs(t) for t in range(3)])
    np.testing.assert_allclose(nxt, ds.observations + STEP_SIZE * np.clip(ds.actions, -1, 1), rtol=0, atol=1e-6)
    assert (ds.observations[:, 20::20] == 0).all() and (np.abs(nxt[:, 19::20]).sum(-1) > 0).all()

    def stop(done, total):
        if done == 30:
            raise Stop

    ckpt = tmp_path / "collect.msgpack"
    with pytest.raises(Stop):
        C.collect(fam, cfg, jax.random.PRNGKey(0), chunk=30, ckpt=ckpt, progress=stop)
    buf = serialization.msgpack_restore(ckpt.read_bytes())["carry"]["buf"]  # after 30 steps
    got = jax.vmap(gather)(buf, jnp.broadcast_to(jnp.arange(30), (3, 30)))  # 29: mid-episode, the newest
    assert np.asarray(got["next_obs"]).tobytes() == nxt[:, :30].tobytes()
    assert np.asarray(got["obs"]).tobytes() == ds.observations[:, :30].tobytes()
    resumed = C.collect(fam, cfg, jax.random.PRNGKey(0), chunk=30, ckpt=ckpt)
    for name, arr in ds.arrays().items():
        assert np.asarray(resumed.arrays()[name]).tobytes() == np.asarray(arr).tobytes(), name


def test_host_collection_with_terminations_keeps_the_env_next_observations(monkeypatch):
    """walker-param terminates inside episodes (falls), episodes are cut at chunk ends, the table of
    episode ends grows: every next state is the env's, bit for bit, in the dataset and, mid-collection,
    in the SAC sampler's batches."""
    fam = get_family("walker-param")
    fam = dataclasses.replace(fam, train_tasks=fam.train_tasks[:3])
    cfg = dataclasses.replace(preset("walker-param", "smoke").sac, total_steps=80, warmup_steps=40, batch_size=16)
    stepped, seen = [], {}
    step, update = hostenv.TaskEnvs.step, hostenv._update

    def record_step(self, actions, active=None):
        out = step(self, actions, active)
        stepped.append(out[0].copy())
        return out

    def record_update(cfg_, act_dim, lift_mode, states, buf, t, key, sums):
        if int(t) == 50:  # mid-chunk: transitions 0..50, the newest included
            seen["batch"] = jax.vmap(gather)(buf, jnp.broadcast_to(jnp.arange(51), (3, 51)))
        return update(cfg_, act_dim, lift_mode, states, buf, t, key, sums)

    monkeypatch.setattr(hostenv.TaskEnvs, "step", record_step)
    monkeypatch.setattr(hostenv, "_update", record_update)
    ds = hostenv.collect_host(fam, cfg, jax.random.PRNGKey(0), chunk=30)
    env_next = np.stack(stepped[1:], 1)  # [K, N, obs]; the first step is collect_host's probe
    assert env_next.shape == (3, 80, 17)
    ends = ds.terminals | ds.timeouts
    inside = ds.terminals.copy()
    inside[:, [29, 59, 79]] = False
    assert inside.sum() >= 6 and ends[:, [29, 59, 79]].all()  # falls inside episodes, and chunk cuts
    assert ds.final_observations.shape[1] == ends.sum(1).max() > 4  # the table grew past its first size
    for t in range(3):
        assert ds.next_obs(t).tobytes() == env_next[t].tobytes()
    assert np.asarray(seen["batch"]["next_obs"]).tobytes() == env_next[:, :51].tobytes()
    assert np.asarray(seen["batch"]["terminals"]).tobytes() == ds.terminals[:, :51].astype(np.float32).tobytes()


def test_host_collection_reports_progress_every_episode_length():
    """Between checkpoints (10K steps on the MuJoCo presets) host collection reports its progress
    once per episode length, so bars and `mbml status` move; the data do not depend on it."""
    fam = get_family("walker-param")
    fam = dataclasses.replace(fam, train_tasks=fam.train_tasks[:2], horizon=20)
    cfg = dataclasses.replace(preset("walker-param", "smoke").sac, total_steps=80, warmup_steps=70, batch_size=8)
    seen = []
    ds = hostenv.collect_host(fam, cfg, jax.random.PRNGKey(0), chunk=60, progress=lambda d, n: seen.append((d, n)))
    assert seen == [(0, 80), (20, 80), (40, 80), (60, 80), (80, 80)]
    quiet = hostenv.collect_host(fam, cfg, jax.random.PRNGKey(0), chunk=60)
    assert quiet.observations.tobytes() == ds.observations.tobytes()


def test_host_collection_stopped_inside_a_chunk_continues_from_its_snapshot(tmp_path, monkeypatch):
    """A stop between checkpoints resumes from the last mid-chunk snapshot (buffer, learners, every
    env's simulator state) and gives bit for bit the data of an uninterrupted run."""
    fam = get_family("walker-param")  # terminations: episodes end at different steps in each env
    fam = dataclasses.replace(fam, train_tasks=fam.train_tasks[:2], horizon=20)
    cfg = dataclasses.replace(preset("walker-param", "smoke").sac, total_steps=100, warmup_steps=30, batch_size=8)
    whole = hostenv.collect_host(fam, cfg, jax.random.PRNGKey(0), chunk=80)

    class Stop(Exception):
        pass

    def stop_at_60(d, n):
        if d == 40:  # snapshots so far after every step, the last one with 40 steps done; no more
            monkeypatch.setattr(hostenv, "SNAPSHOT_EVERY", float("inf"))
        if d == 60:
            raise Stop

    ckpt = tmp_path / "collect.msgpack"
    monkeypatch.setattr(hostenv, "SNAPSHOT_EVERY", 0.0)
    with pytest.raises(Stop):
        hostenv.collect_host(fam, cfg, jax.random.PRNGKey(0), chunk=80, ckpt=ckpt, progress=stop_at_60)
    assert not ckpt.exists() and ckpt.with_suffix(".mid.pkl").exists()  # inside the first chunk
    assert json.loads(ckpt.with_suffix(".progress.json").read_text()) == {"done": 40, "total": 100}  # mbml status
    stepped = []
    step = hostenv.TaskEnvs.step
    monkeypatch.setattr(hostenv.TaskEnvs, "step", lambda self, *a: stepped.append(1) or step(self, *a))
    seen = []
    resumed = hostenv.collect_host(fam, cfg, jax.random.PRNGKey(0), chunk=80, ckpt=ckpt,
                                   progress=lambda d, n: seen.append(d))
    assert len(stepped) == 1 + 100 - 40  # the shape probe, then steps 40..99
    assert seen[0] == 40  # the first report is where it resumes (bars' rates do not count a jump)
    for f in ("observations", "actions", "rewards", "final_observations", "terminals", "timeouts"):
        assert getattr(resumed, f).tobytes() == getattr(whole, f).tobytes(), f
    assert not ckpt.with_suffix(".mid.pkl").exists()


def test_collection_checkpoint_of_an_older_mbml(tmp_path):
    fam, cfg = _point_nav(60)
    ckpt = tmp_path / "collect.msgpack"
    io.save_pytree(ckpt, {"carry": {"buf": {"observations": np.zeros((3, 60, 2), np.float32),
                                            "next_observations": np.zeros((3, 60, 2), np.float32)}}, "done": 30})
    msg = raises_one_line(C.collect, fam, cfg, jax.random.PRNGKey(0), chunk=30, ckpt=ckpt, match="older mbml")
    assert str(ckpt) in msg and "delete it" in msg
    ckpt.write_bytes(b"\x00garbage")  # anything else unreadable is still reported as corrupt
    with pytest.raises(MbmlError, match="corrupt checkpoint"):
        C.collect(fam, cfg, jax.random.PRNGKey(0), chunk=30, ckpt=ckpt)
