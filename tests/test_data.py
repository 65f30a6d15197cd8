"""The dataset format (mbml.data), atomic files (mbml.io) and resumable training loops (mbml.train_loop).

Bad input must raise MbmlError with a one-line message naming the problem, never a numpy/json traceback.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from mbml import data as D, io
from mbml.data import Dataset
from mbml.errors import MbmlError
from mbml.train_loop import run_chunks

ARRAYS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts", "tasks")


def raises_one_line(fn, *args, match: str | None = None, **kwargs) -> str:
    with pytest.raises(MbmlError, match=match) as e:
        fn(*args, **kwargs)
    msg = str(e.value)
    assert msg and "\n" not in msg, f"not a one-line message: {msg!r}"
    return msg


def assert_same(a: Dataset, b: Dataset) -> None:
    for name in ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=name)
    assert set(a.extras) == set(b.extras)
    for name in a.extras:
        np.testing.assert_array_equal(np.asarray(a.extras[name]), np.asarray(b.extras[name]), err_msg=name)
    assert a.meta == b.meta


@pytest.fixture
def saved(tmp_path, make_dataset):
    ds = make_dataset(k=3, n=16)
    path = tmp_path / "data"
    D.save(ds, path)
    return ds, path


# ------------------------------------------------------------------------------------ round trip


@pytest.mark.parametrize("mmap", [True, False])
def test_round_trip_is_identical(saved, mmap):
    ds, path = saved
    back = D.load(path, mmap=mmap)
    assert_same(ds, back)
    assert back.observations.dtype == np.float32 and back.terminals.dtype == np.bool_
    assert back.tasks.dtype == np.float64
    assert isinstance(back.observations, np.memmap) == mmap
    assert back.num_tasks == 3 and back.num_transitions == 16
    assert back.extras["xy"].shape == (3, 16, 2)
    assert back.meta == {"seed": 0, "family": "synthetic", "note": "ü"}


def test_save_writes_the_documented_layout(saved):
    ds, path = saved
    names = {p.name for p in path.iterdir()}
    assert names == {f"{a}.npy" for a in ARRAYS} | {"extra_x_velocity.npy", "extra_xy.npy", "meta.json"}
    meta = json.loads((path / "meta.json").read_text())
    assert (meta["format"], meta["version"]) == ("mbml-dataset", 1)
    assert (meta["num_tasks"], meta["num_transitions"], meta["obs_dim"], meta["act_dim"]) == (3, 16, 2, 2)
    assert meta["arrays"]["rewards"] == {"shape": [3, 16], "dtype": "float32"}
    assert meta["arrays"]["terminals"] == {"shape": [3, 16], "dtype": "bool"}


def test_save_over_an_existing_dataset_replaces_it_and_leaves_no_temp(tmp_path, make_dataset):
    path = tmp_path / "data"
    D.save(make_dataset(seed=0), path)
    second = make_dataset(seed=1, extras=False)
    D.save(second, path)
    assert_same(second, D.load(path))
    assert not (path / "extra_xy.npy").exists()  # nothing of the old dataset survives
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # no .data.* temp or .old folder left


def test_head_cuts_every_task(make_dataset):
    ds = make_dataset(k=2, n=16)
    h = ds.head(5)
    assert h.num_transitions == 5 and h.num_tasks == 2
    for name in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts"):
        np.testing.assert_array_equal(getattr(h, name), getattr(ds, name)[:, :5])
    np.testing.assert_array_equal(h.extras["xy"], ds.extras["xy"][:, :5])
    np.testing.assert_array_equal(h.tasks, ds.tasks)
    assert h.meta == ds.meta and h.meta is not ds.meta
    # 0 (the default "all") and sizes at or beyond N keep everything
    for n in (0, 16, 100):
        assert ds.head(n).num_transitions == 16


def test_from_tasks_stacks_and_converts(make_dataset):
    ds = make_dataset(k=2, n=8)
    per_task = [{name: getattr(ds, name)[i].astype(np.float64) if name != "terminals" else getattr(ds, name)[i]
                 for name in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")}
                | {"xy": ds.extras["xy"][i]} for i in range(2)]
    out = Dataset.from_tasks(per_task, ds.tasks, meta={"a": 1})
    assert out.observations.dtype == np.float32 and out.observations.shape == (2, 8, 2)
    np.testing.assert_array_equal(out.rewards, ds.rewards)
    np.testing.assert_array_equal(out.timeouts, ds.timeouts)
    assert set(out.extras) == {"xy"} and out.extras["xy"].shape == (2, 8, 2)
    assert out.meta == {"a": 1}


# ----------------------------------------------------------------------------------- bad input


def _per_task(ds: Dataset, i: int) -> dict:
    return {name: getattr(ds, name)[i]
            for name in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")}


def test_from_tasks_rejects_different_observation_sizes(make_dataset):
    a, b = make_dataset(k=1, n=8, obs_dim=2, extras=False), make_dataset(k=1, n=8, obs_dim=3, extras=False)
    msg = raises_one_line(Dataset.from_tasks, [_per_task(a, 0), _per_task(b, 0)], np.zeros((2, 2)))
    assert "observation sizes differ" in msg and "2" in msg and "3" in msg


def test_from_tasks_rejects_different_lengths_and_missing_arrays(make_dataset):
    a, b = make_dataset(k=1, n=8, extras=False), make_dataset(k=1, n=6, extras=False)
    raises_one_line(Dataset.from_tasks, [_per_task(a, 0), _per_task(b, 0)], np.zeros((2, 2)),
                    match="different numbers of transitions")
    broken = _per_task(b, 0)
    del broken["timeouts"]
    raises_one_line(Dataset.from_tasks, [_per_task(a, 0), broken], np.zeros((2, 2)), match="timeouts")
    raises_one_line(Dataset.from_tasks, [], np.zeros((0, 2)))


@pytest.mark.parametrize("case", ["extra missing in task 1", "rewards length differs"])
def test_from_tasks_rejects_tasks_that_disagree(make_dataset, case):
    ds = make_dataset(k=2, n=8)
    per_task = [_per_task(ds, i) | {"xy": ds.extras["xy"][i]} for i in range(2)]
    if case == "extra missing in task 1":
        del per_task[1]["xy"]
    else:
        per_task[1]["rewards"] = per_task[1]["rewards"][:7]
    raises_one_line(Dataset.from_tasks, per_task, ds.tasks)


def test_validate_rejects_non_boolean_flags(make_dataset):
    ds = make_dataset(k=2, n=8)
    ds.terminals = ds.terminals.astype(np.float32)
    raises_one_line(D.validate, ds)


@pytest.mark.parametrize("mmap", [True, False])
@pytest.mark.parametrize("keep", [0, 10, "half"])
def test_truncated_npy(saved, mmap, keep):
    _, path = saved
    f = path / "rewards.npy"
    raw = f.read_bytes()
    f.write_bytes(raw[: len(raw) // 2 if keep == "half" else keep])
    msg = raises_one_line(D.load, path, mmap=mmap)
    assert "rewards.npy" in msg


@pytest.mark.parametrize("text", ["{not json", "", "[1, 2]", '{"format": "something-else", "version": 1}'])
def test_corrupt_meta_json(saved, text):
    _, path = saved
    (path / "meta.json").write_text(text)
    msg = raises_one_line(D.load, path)
    assert "meta.json" in msg


@pytest.mark.parametrize("arrays", [{"rewards": 5}, ["rewards"], {"rewards": {"dtype": "float32"}}])
def test_meta_json_with_malformed_array_entries(saved, arrays):
    _, path = saved
    meta = json.loads((path / "meta.json").read_text())
    meta["arrays"] = arrays
    (path / "meta.json").write_text(json.dumps(meta))
    raises_one_line(D.load, path)


def test_missing_meta_json(saved):
    _, path = saved
    (path / "meta.json").unlink()
    raises_one_line(D.load, path, match="not an mbml dataset")


def test_missing_array_file(saved):
    _, path = saved
    (path / "actions.npy").unlink()
    msg = raises_one_line(D.load, path, match="missing")
    assert "actions.npy" in msg


def test_array_not_listed_in_meta(saved):
    _, path = saved
    meta = json.loads((path / "meta.json").read_text())
    del meta["arrays"]["timeouts"]
    (path / "meta.json").write_text(json.dumps(meta))
    raises_one_line(D.load, path, match="lacks arrays: timeouts")


def test_file_shape_differs_from_meta(saved):
    _, path = saved
    np.save(path / "rewards.npy", np.zeros((3, 15), np.float32))
    raises_one_line(D.load, path, match="rewards.npy has shape")
    np.save(path / "rewards.npy", np.zeros((3, 16), np.float64))  # right shape, wrong dtype
    raises_one_line(D.load, path, match="float64")


def test_shapes_that_disagree_between_arrays(saved, make_dataset):
    # meta.json and the file agree, but rewards has 15 transitions where observations have 16
    _, path = saved
    np.save(path / "rewards.npy", np.zeros((3, 15), np.float32))
    meta = json.loads((path / "meta.json").read_text())
    meta["arrays"]["rewards"]["shape"] = [3, 15]
    (path / "meta.json").write_text(json.dumps(meta))
    raises_one_line(D.load, path, match=r"rewards has shape \(3, 15\), expected \(3, 16\)")
    # the same caught before writing
    ds = make_dataset(k=2, n=8)
    ds.next_observations = ds.next_observations[:, :, :1]
    raises_one_line(D.save, ds, path.parent / "other", match="next_observations has shape")
    assert not (path.parent / "other").exists()
    ds = make_dataset(k=2, n=8)
    ds.extras["xy"] = ds.extras["xy"][:, :7]
    raises_one_line(D.validate, ds, match="extra 'xy'")
    ds = make_dataset(k=2, n=8)
    ds.tasks = ds.tasks[:1]
    raises_one_line(D.validate, ds, match="tasks has shape")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_rewards(tmp_path, make_dataset, bad):
    ds = make_dataset(k=2, n=8)
    ds.rewards[1, 3] = bad
    raises_one_line(D.save, ds, tmp_path / "data", match="rewards of task 1 holds 1 NaN or infinite")
    assert not (tmp_path / "data").exists()
    # written behind save's back: caught on load
    good = make_dataset(k=2, n=8)
    D.save(good, tmp_path / "data")
    np.save(tmp_path / "data" / "rewards.npy", ds.rewards)
    raises_one_line(D.load, tmp_path / "data", match="rewards of task 1")


def test_single_task_when_two_are_needed(tmp_path, make_dataset):
    D.save(make_dataset(k=1, n=8), tmp_path / "data")
    assert D.load(tmp_path / "data").num_tasks == 1  # fine by default
    raises_one_line(D.load, tmp_path / "data", min_tasks=2, match="1 task")


@pytest.mark.parametrize("version", [2, 0, "1", None])
def test_format_version_mismatch(saved, version):
    _, path = saved
    meta = json.loads((path / "meta.json").read_text())
    meta["version"] = version
    (path / "meta.json").write_text(json.dumps(meta))
    raises_one_line(D.load, path, match="version")


def test_failed_load_changes_nothing(saved, snapshot):
    _, path = saved
    (path / "rewards.npy").write_bytes((path / "rewards.npy").read_bytes()[:100])
    before = snapshot(path)
    raises_one_line(D.load, path)
    assert snapshot(path) == before


# ---------------------------------------------------------------------------------- atomic files


def test_json_round_trip_and_no_temp_files(tmp_path):
    p = tmp_path / "sub" / "x.json"
    io.write_json(p, {"a": np.float32(1.5), "b": np.arange(3), "c": Path("/x")})
    io.write_json(p, {"a": np.float32(2.5), "b": np.arange(3), "c": Path("/y")})  # overwrite
    assert io.read_json(p) == {"a": 2.5, "b": [0, 1, 2], "c": "/y"}
    assert [q.name for q in p.parent.iterdir()] == ["x.json"]


def test_pytree_round_trip_and_no_temp_files(tmp_path):
    p = tmp_path / "ckpt.msgpack"
    tree = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "step": np.int32(7), "n": {"b": np.ones(2, bool)}}
    io.save_pytree(p, tree)
    io.save_pytree(p, tree)
    template = {"w": np.zeros((2, 3), np.float32), "step": np.int32(0), "n": {"b": np.zeros(2, bool)}}
    back = io.load_pytree(p, template)
    np.testing.assert_array_equal(back["w"], tree["w"])
    assert int(back["step"]) == 7 and back["n"]["b"].all()
    assert [q.name for q in tmp_path.iterdir()] == ["ckpt.msgpack"]


def test_interrupted_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    p = tmp_path / "x.json"
    io.write_json(p, {"old": 1})

    def boom(src, dst):
        raise KeyboardInterrupt  # killed between writing the temp file and renaming it

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        io.write_json(p, {"new": 2})
    monkeypatch.undo()
    assert io.read_json(p) == {"old": 1}
    assert [q.name for q in tmp_path.iterdir()] == ["x.json"]


@pytest.mark.parametrize("content", [b"", b"\x00garbage\xff", "half"])
def test_load_pytree_of_a_corrupt_file(tmp_path, content):
    p = tmp_path / "ckpt.msgpack"
    template = {"w": np.zeros((64,), np.float32), "step": np.int32(0)}
    io.save_pytree(p, {"w": np.ones(64, np.float32), "step": np.int32(3)})
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2] if content == "half" else content)
    raises_one_line(io.load_pytree, p, template, match="corrupt checkpoint")


def test_load_pytree_missing_or_of_another_structure(tmp_path):
    raises_one_line(io.load_pytree, tmp_path / "nope.msgpack", {"w": np.zeros(2)}, match="missing checkpoint")
    io.save_pytree(tmp_path / "a.msgpack", {"w": np.zeros(2)})
    raises_one_line(io.load_pytree, tmp_path / "a.msgpack", {"v": np.zeros(2), "u": np.zeros(1)})


def test_read_json_corrupt_and_missing(tmp_path):
    (tmp_path / "bad.json").write_text('{"a": ')
    raises_one_line(io.read_json, tmp_path / "bad.json", match="corrupt JSON")
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00")
    raises_one_line(io.read_json, tmp_path / "bin.json", match="corrupt JSON")
    raises_one_line(io.read_json, tmp_path / "none.json", match="missing file")


# ------------------------------------------------------------------------------- resumable loops


class Interrupted(Exception):
    pass


def _advance_factory(log: list, fail_on_call: int | None = None):
    """x <- 1.5 x + n + done: order-dependent, so a resumed run only matches if every chunk ran once."""
    def advance(carry, done, n):
        if fail_on_call is not None and len(log) == fail_on_call:
            raise Interrupted
        log.append((done, n))
        return {"x": carry["x"] * 1.5 + n + done, "calls": carry["calls"] + 1}
    return advance


def _carry0():
    return {"x": jnp.float32(1.0), "calls": jnp.int32(0)}


def test_run_chunks_resumes_from_the_checkpoint(tmp_path):
    ref_log: list = []
    ref = run_chunks(_carry0(), 10, 3, _advance_factory(ref_log))
    assert ref_log == [(0, 3), (3, 3), (6, 3), (9, 1)]
    # hand: x = 1 -> 1.5 + 3 + 0 = 4.5 -> 6.75 + 3 + 3 = 12.75 -> 19.125 + 3 + 6 = 28.125 -> 42.1875 + 1 + 9 = 52.1875
    np.testing.assert_allclose(ref["x"], 52.1875)

    ckpt = tmp_path / "ckpt" / "run.msgpack"
    log: list = []
    with pytest.raises(Interrupted):
        run_chunks(_carry0(), 10, 3, _advance_factory(log, fail_on_call=2), ckpt)
    assert log == [(0, 3), (3, 3)] and ckpt.exists()

    progress: list = []
    log2: list = []
    out = run_chunks(_carry0(), 10, 3, _advance_factory(log2), ckpt, progress=lambda d, t: progress.append((d, t)))
    assert log2 == [(6, 3), (9, 1)]  # continued after the 2 finished chunks, nothing redone
    assert progress == [(6, 10), (9, 10), (10, 10)]
    np.testing.assert_allclose(out["x"], ref["x"])
    assert int(out["calls"]) == int(ref["calls"]) == 4
    # a finished run restarted with its checkpoint does no more work
    log3: list = []
    again = run_chunks(_carry0(), 10, 3, _advance_factory(log3), ckpt)
    assert log3 == [] and float(again["x"]) == float(ref["x"])


def test_run_chunks_after_hook_is_checkpointed(tmp_path):
    ckpt = tmp_path / "c.msgpack"
    seen: list = []

    def after(carry, done):
        seen.append(done)
        return {**carry, "calls": carry["calls"] + 100}

    with pytest.raises(Interrupted):
        run_chunks(_carry0(), 4, 2, _advance_factory([], fail_on_call=1), ckpt, after=after)
    out = run_chunks(_carry0(), 4, 2, _advance_factory([]), ckpt, after=after)
    assert seen == [2, 4]
    assert int(out["calls"]) == 2 + 200  # two chunks, two after() calls, the first restored from disk
