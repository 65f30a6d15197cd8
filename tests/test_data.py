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
from mbml.dataset_writer import DatasetWriter
from mbml.errors import MbmlError
from mbml.train_loop import run_chunks

ARRAYS = ("observations", "actions", "rewards", "final_observations", "terminals", "timeouts", "tasks")
PER_STEP = ("observations", "actions", "rewards", "terminals", "timeouts")


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
    assert (meta["format"], meta["version"]) == ("mbml-dataset", 2)
    assert (meta["num_tasks"], meta["num_transitions"], meta["obs_dim"], meta["act_dim"]) == (3, 16, 2, 2)
    assert meta["arrays"]["rewards"] == {"shape": [3, 16], "dtype": "float32"}
    assert meta["arrays"]["terminals"] == {"shape": [3, 16], "dtype": "bool"}
    # task 0 ends episodes at 3, 7 and 15 (also its last transition), tasks 1 and 2 at 7 and 15
    assert meta["arrays"]["final_observations"] == {"shape": [3, 3, 2], "dtype": "float32"}


def test_save_over_an_existing_dataset_replaces_it_and_leaves_no_temp(tmp_path, make_dataset):
    path = tmp_path / "data"
    D.save(make_dataset(seed=0), path)
    second = make_dataset(seed=1, extras=False)
    D.save(second, path)
    assert_same(second, D.load(path))
    assert not (path / "extra_xy.npy").exists()  # nothing of the old dataset survives
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # no .data.* temp or .old folder left


def _kill_between_renames(path: Path) -> None:
    """What `replace_dir` leaves when killed after moving the old folder aside, before the new one is in."""
    path.rename(path.with_name(f".{path.name}.old"))


def test_a_replacement_killed_between_its_renames_loses_nothing(tmp_path, make_dataset):
    path = tmp_path / "data"
    first, second = make_dataset(seed=0), make_dataset(seed=1, extras=False)
    D.save(first, path)
    _kill_between_renames(path)
    assert_same(first, D.load(path))  # a reader puts the old copy back
    assert [p.name for p in tmp_path.iterdir()] == ["data"]
    _kill_between_renames(path)
    D.save(second, path)  # so does the next writer, before replacing it
    assert_same(second, D.load(path))
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


def _dead_pid() -> int:
    import subprocess, sys
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid  # reaped: no process has this pid (until the system reuses it)


@pytest.mark.parametrize("writer", ["save", "writer", "atomic_write"])
def test_a_writer_removes_staging_left_by_a_killed_process_only(tmp_path, make_dataset, writer):
    """A kill mid-write leaves `.NAME.HOST-PID.XXXX` beside NAME; the next write of NAME removes it
    when that process is gone, and keeps those of live processes, other hosts and unknown writers."""
    import socket
    path, host = tmp_path / "data", socket.gethostname()
    stale = [tmp_path / f".data.{host}-{_dead_pid()}.abc", tmp_path / f".data.{host}-{_dead_pid()}.def"]
    kept = [tmp_path / f".data.{host}-{os.getpid()}.live", tmp_path / ".data.otherhost-1.x",
            tmp_path / ".data.legacy1", tmp_path / f".database.{host}-{_dead_pid()}.x"]
    for i, entry in enumerate(stale + kept):
        if i % 2:
            (entry / "sub").mkdir(parents=True)
            (entry / "sub" / "observations.npy").write_bytes(b"x")
        else:
            entry.write_bytes(b"x")
    ds = make_dataset(k=2, n=16)
    if writer == "save":
        D.save(ds, path)
    elif writer == "writer":
        write_in_pieces(stacked(ds), path, 16, meta=ds.meta)
    else:
        io.atomic_write_bytes(path, b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["data"] + [p.name for p in kept])


@pytest.mark.parametrize("n", [3, 4, 5, 8, 9])
def test_head_cuts_every_task(make_dataset, n):
    """Task 0 ends episodes at 3 (terminal) and 7 (timeout), task 1 at 7: the cuts end before,
    at and after an episode end, so the new last transition's next state is obs[n] or a final one."""
    ds = make_dataset(k=2, n=16)
    h = ds.head(n)
    assert h.num_transitions == n and h.num_tasks == 2
    for name in PER_STEP:
        np.testing.assert_array_equal(getattr(h, name), getattr(ds, name)[:, :n])
    for t in range(2):
        assert h.next_obs(t).tobytes() == ds.next_obs(t)[:n].tobytes()
    D.validate(h)
    h = ds.head(5)
    np.testing.assert_array_equal(h.extras["xy"], ds.extras["xy"][:, :5])
    np.testing.assert_array_equal(h.tasks, ds.tasks)
    assert h.meta == ds.meta and h.meta is not ds.meta
    # 0 (the default "all") and sizes at or beyond N keep everything
    for n in (0, 16, 100):
        assert ds.head(n).num_transitions == 16


def test_from_tasks_stacks_and_converts(make_dataset):
    ds = make_dataset(k=2, n=8)
    per_task = [{name: v.astype(np.float64) if name != "terminals" else v for name, v in _per_task(ds, i).items()}
                | {"xy": ds.extras["xy"][i]} for i in range(2)]
    out = Dataset.from_tasks(per_task, ds.tasks, meta={"a": 1})
    assert out.observations.dtype == np.float32 and out.observations.shape == (2, 8, 2)
    np.testing.assert_array_equal(out.rewards, ds.rewards)
    np.testing.assert_array_equal(out.timeouts, ds.timeouts)
    np.testing.assert_array_equal(out.final_observations, ds.final_observations)
    assert set(out.extras) == {"xy"} and out.extras["xy"].shape == (2, 8, 2)
    assert out.meta == {"a": 1}


# ------------------------------------------------------------- next observations (format version 2)


def chained(k: int = 2, n: int = 12, obs_dim: int = 3, seed: int = 0) -> dict:
    """Stacked arrays with full next observations: task 0 terminates at 2 and times out at 6, task 1
    times out at 4; the last transition ends no episode. Within an episode s'_t = s_{t+1}."""
    rng = np.random.default_rng(seed)
    terminals, timeouts = np.zeros((k, n), bool), np.zeros((k, n), bool)
    terminals[0, 2] = timeouts[0, 6] = timeouts[1, 4] = True
    states = rng.normal(size=(k, n + 1, obs_dim)).astype(np.float32)
    nxt = states[:, 1:].copy()
    ends = terminals | timeouts
    nxt[ends] = rng.normal(size=(int(ends.sum()), obs_dim)).astype(np.float32)  # true final states
    return {"observations": states[:, :-1], "actions": rng.uniform(-1, 1, (k, n, 2)).astype(np.float32),
            "rewards": rng.normal(size=(k, n)).astype(np.float32), "next_observations": nxt,
            "terminals": terminals, "timeouts": timeouts, "tasks": rng.normal(size=(k, 2))}


def write_version_1(path: Path, arrays: dict) -> None:
    """A dataset folder as mbml wrote it before version 2: next_observations.npy in full."""
    path.mkdir(parents=True)
    for name, arr in arrays.items():
        np.save(path / f"{name}.npy", arr)
    k, n, d = arrays["observations"].shape
    (path / "meta.json").write_text(json.dumps({
        "format": "mbml-dataset", "version": 1, "num_tasks": k, "num_transitions": n, "obs_dim": d, "act_dim": 2,
        "arrays": {name: {"shape": list(a.shape), "dtype": str(a.dtype)} for name, a in arrays.items()},
        "meta": {"family": "synthetic"}}))


def assert_next_observations(ds: Dataset, nxt: np.ndarray) -> None:
    for t in range(ds.num_tasks):
        assert ds.next_obs(t).tobytes() == np.ascontiguousarray(nxt[t]).tobytes(), t
        idx = np.minimum([len(nxt[t]) - 1, 0, 2, 2], len(nxt[t]) - 1)  # any subset, in any order
        assert ds.next_obs(t, idx).tobytes() == np.ascontiguousarray(nxt[t][idx]).tobytes(), t


@pytest.mark.parametrize("mmap", [True, False])
def test_next_observations_round_trip(tmp_path, mmap):
    a = chained()
    ds = Dataset.from_arrays(**a)
    # rows: task 0's ends 2 and 6, then its last transition 11; task 1's end 4, its last, a zero row
    nxt = a["next_observations"]
    np.testing.assert_array_equal(ds.final_observations[0], nxt[0, [2, 6, 11]])
    np.testing.assert_array_equal(ds.final_observations[1], np.concatenate([nxt[1, [4, 11]], np.zeros((1, 3))]))
    np.testing.assert_array_equal(ds.final_slots(), [[-1, -1, 0, -1, -1, -1, 1, -1, -1, -1, -1, 2],
                                                     [-1, -1, -1, -1, 0, -1, -1, -1, -1, -1, -1, 1]])
    D.save(ds, tmp_path / "data")
    assert not (tmp_path / "data" / "next_observations.npy").exists()
    back = D.load(tmp_path / "data", mmap=mmap)
    assert_same(ds, back)
    assert_next_observations(back, nxt)


@pytest.mark.parametrize("n", [2, 3, 4, 5, 7, 11])
def test_head_gives_the_right_next_observations(n):
    """Cut before, at and after an episode end: the new last transition n-1 takes obs[n] as its next
    state where it ends no episode, else its final one."""
    a = chained()
    h = Dataset.from_arrays(**a).head(n)
    D.validate(h)
    assert_next_observations(h, a["next_observations"][:, :n])
    assert h.final_observations.shape[1] == max(1 + int((a["terminals"] | a["timeouts"])[t, :n - 1].sum())
                                                for t in range(2))


@pytest.mark.parametrize("mmap", [True, False])
def test_version_1_folder_loads_with_the_same_next_observations(tmp_path, mmap):
    a = chained(k=3)
    write_version_1(tmp_path / "v1", a)
    ds = D.load(tmp_path / "v1", mmap=mmap)
    assert_next_observations(ds, a["next_observations"])
    for name in PER_STEP:
        np.testing.assert_array_equal(getattr(ds, name), a[name])
    assert isinstance(ds.observations, np.memmap) == mmap
    assert not isinstance(ds.final_observations, np.memmap)  # the end rows only, in RAM
    D.save(ds, tmp_path / "v2")  # written again as version 2, identical next observations
    assert json.loads((tmp_path / "v2" / "meta.json").read_text())["version"] == 2
    assert_next_observations(D.load(tmp_path / "v2"), a["next_observations"])


def test_version_1_folder_with_inconsistent_next_observations(tmp_path, snapshot):
    a = chained()
    a["next_observations"][1, 7] += 1.0  # mid-episode: not the observation of transition 8
    write_version_1(tmp_path / "v1", a)
    before = snapshot(tmp_path / "v1")
    msg = raises_one_line(D.load, tmp_path / "v1", match="task 1 at transition 7")
    assert str(tmp_path / "v1") in msg and "timeouts" in msg
    assert snapshot(tmp_path / "v1") == before


@pytest.mark.parametrize("spoil,match", [
    (lambda f: f.write_bytes(f.read_bytes()[:200]), "next_observations.npy is truncated or corrupt"),
    (lambda f: f.unlink(), "next_observations.npy is missing"),
    (lambda f: np.save(f, np.zeros((2, 12, 2), np.float32)), "next_observations.npy has shape"),
])
def test_version_1_folder_with_a_bad_next_observations_file(tmp_path, spoil, match):
    write_version_1(tmp_path / "v1", chained())
    spoil(tmp_path / "v1" / "next_observations.npy")
    if "has shape" in match:  # meta.json agrees with the file, which disagrees with the observations
        meta = json.loads((tmp_path / "v1" / "meta.json").read_text())
        meta["arrays"]["next_observations"]["shape"] = [2, 12, 2]
        (tmp_path / "v1" / "meta.json").write_text(json.dumps(meta))
    raises_one_line(D.load, tmp_path / "v1", match=match)


def test_version_1_folder_without_next_observations(tmp_path):
    a = chained()
    del a["next_observations"]
    write_version_1(tmp_path / "v1", a)
    raises_one_line(D.load, tmp_path / "v1", match="lacks arrays: next_observations")


@pytest.mark.parametrize("chunk_bytes", [D._CHECK_BYTES, 12, 24])
@pytest.mark.parametrize("bad", [(0, 0), (0, 5), (1, 10), (1, 3), (0, 4), (1, 9)])
def test_next_observations_that_are_not_the_following_observations(tmp_path, monkeypatch, chunk_bytes, bad):
    """Checked bit for bit, a slice of rows at a time (here also 1 and 2 rows of 3 floats); the writer
    checks them as they come, also across its pieces (here 5 transitions: (0, 4) and (1, 9) end one)."""
    monkeypatch.setattr(D, "_CHECK_BYTES", chunk_bytes)
    a = chained()
    assert Dataset.from_arrays(**a).num_transitions == 12
    t, i = bad
    a["next_observations"][t, i] = -a["next_observations"][t, i]
    msg = raises_one_line(Dataset.from_arrays, **a, match=f"task {t} at transition {i} ")
    assert "timeouts" in msg
    per_task = [{name: a[name][j] for name in (*PER_STEP, "next_observations")} for j in range(2)]
    raises_one_line(Dataset.from_tasks, per_task, a["tasks"], match=f"task {t} at transition {i} ")
    raises_one_line(write_in_pieces, a, tmp_path / "w", 5, match=f"task {t} at transition {i} ")
    assert not list(tmp_path.iterdir())
    a["timeouts"][t, i] = True  # an episode end: its next state is kept as given
    assert_next_observations(Dataset.from_arrays(**a), a["next_observations"])


def test_next_observations_are_compared_bit_for_bit():
    a = chained()
    a["observations"][0, 4, 1] = 0.0
    a["next_observations"][0, 3, 1] = -0.0  # equal as numbers, not as data
    raises_one_line(Dataset.from_arrays, **a, match="task 0 at transition 3 ")
    a["next_observations"][0, 3, 1] = 0.0
    Dataset.from_arrays(**a)


def test_next_observations_of_the_wrong_shape():
    a = chained()
    a["next_observations"] = a["next_observations"][:, :, :2]
    raises_one_line(Dataset.from_arrays, **a, match=r"next_observations has shape \(2, 12, 2\), expected \(2, 12, 3\)")
    per_task = [{name: a[name][j] for name in (*PER_STEP, "next_observations")} for j in range(2)]
    raises_one_line(Dataset.from_tasks, per_task, a["tasks"], match="task 0: next_observations has shape")


# -------------------------------------------------------------------------------- streaming writer


def write_in_pieces(a: dict, path: Path, size: int, num_finals: int | None = None, **kwargs) -> Dataset:
    """Stacked arrays `a` (as `chained` gives them) through a DatasetWriter, `size` transitions at a
    time, the tasks interleaved, as import streams episodes."""
    k, n, d = a["observations"].shape
    extras = {name: v.shape[2:] for name, v in a.items() if name not in (*PER_STEP, "next_observations", "tasks")}
    m = int(D.final_mask(a["terminals"], a["timeouts"]).sum(1).max()) if num_finals is None else num_finals
    with DatasetWriter(path, a["tasks"], n, m, d, a["actions"].shape[-1], extras=extras, **kwargs) as w:
        for s in range(0, n, size):
            for t in range(k):
                w.append(t, **{name: v[t, s:s + size] for name, v in a.items() if name != "tasks"})
    return w.close()


def stacked(ds: Dataset) -> dict:
    """The arrays `write_in_pieces` takes, of a dataset."""
    return {name: np.asarray(getattr(ds, name)) for name in (*PER_STEP, "tasks")} | dict(ds.extras) | {
        "next_observations": np.stack([ds.next_obs(t) for t in range(ds.num_tasks)])}


@pytest.mark.parametrize("size", [1, 3, 5, 16])
def test_writer_writes_what_save_writes(tmp_path, make_dataset, snapshot, size):
    """Byte for byte, in pieces that end before, at and after episode ends (task 0: 3, 7 and 15)."""
    ds = make_dataset(k=3, n=16)
    D.save(ds, tmp_path / "saved")
    back = write_in_pieces(stacked(ds), tmp_path / "written", size, meta=ds.meta)
    assert snapshot(tmp_path / "written") == snapshot(tmp_path / "saved")
    assert_same(ds, back)
    assert isinstance(back.observations, np.memmap)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved", "written"]  # no staging folder left


def test_writer_takes_pieces_of_any_length_and_replaces_a_dataset(tmp_path, make_dataset):
    ds, old = make_dataset(k=2, n=16), make_dataset(k=3, n=8, seed=1)
    D.save(old, tmp_path / "data")
    a = stacked(ds)
    with DatasetWriter(tmp_path / "data", ds.tasks, 16, 3, 2, 2, extras={"x_velocity": (), "xy": (2,)},
                         meta=ds.meta) as w:
        for t in (1, 0):
            for s, e in [(0, 0), (0, 7), (7, 8), (8, 8), (8, 16), (16, 16)]:
                w.append(t, **{name: v[t, s:e] for name, v in a.items() if name != "tasks"})
    assert_same(ds, D.load(tmp_path / "data"))
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


@pytest.mark.parametrize("error", [MbmlError, KeyboardInterrupt])
def test_writer_error_midway_leaves_no_folder_and_the_old_dataset(tmp_path, make_dataset, snapshot, error):
    D.save(make_dataset(k=2, n=8, seed=1), tmp_path / "data")
    before = snapshot(tmp_path / "data")
    a = stacked(make_dataset(k=2, n=8))

    def spoilt(t, s, e):
        piece = {name: v[t, s:e].copy() for name, v in a.items() if name != "tasks"}
        if (t, s) == (1, 4):
            if error is KeyboardInterrupt:
                raise KeyboardInterrupt
            piece["observations"][1, 0] = np.nan
        return piece

    with pytest.raises(error, match="observations of task 1 holds 1 NaN" if error is MbmlError else None):
        with DatasetWriter(tmp_path / "data", a["tasks"], 8, 2, 2, 2, extras={"x_velocity": (), "xy": (2,)}) as w:
            for s in (0, 4):
                for t in range(2):
                    w.append(t, **spoilt(t, s, s + 4))
    assert snapshot(tmp_path / "data") == before
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


@pytest.mark.parametrize("case,match", [
    ("NaN observation", "observations of task 0 holds 1 NaN"),
    ("infinite reward", "rewards of task 1 holds 1 NaN or infinite"),
    ("infinite final state", r"next_observations of task 0 holds 1 NaN or infinite value\(s\) in transitions 5 to 9"),
    ("extra missing", r"extras \['x_velocity'\] given, the dataset has \['x_velocity', 'xy'\]"),
    ("actions too narrow", r"task 0: actions has shape \(5, 1\), expected \(5, 2\)"),
])
def test_writer_checks_what_it_is_given(tmp_path, case, match):
    a = chained() | {"xy": np.zeros((2, 12, 2), np.float32), "x_velocity": np.zeros((2, 12), np.float32)}
    if case == "NaN observation":
        a["observations"][0, 3, 1] = np.nan
    elif case == "infinite reward":
        a["rewards"][1, 11] = np.inf
    elif case == "infinite final state":
        a["next_observations"][0, 6, 1] = np.inf  # an episode end: its row goes to final_observations
    elif case == "extra missing":
        del a["xy"]
    else:
        a["actions"] = a["actions"][:, :, :1]

    def run():
        with DatasetWriter(tmp_path / "w", a["tasks"], 12, 3, 3, 2, extras={"x_velocity": (), "xy": (2,)}) as w:
            for s in range(0, 12, 5):
                for t in range(2):
                    w.append(t, **{name: v[t, s:s + 5] for name, v in a.items() if name != "tasks"})

    raises_one_line(run, match=match)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("case,match", [
    ("too many", "task 0 would have 13 transitions; the dataset has 12"),
    ("too few", "task 1 has 10 of the dataset's 12 transitions"),
    ("num_finals too small", "task 0 has more than num_finals=2 episode ends"),
    ("num_finals too large", "num_finals is 4, but the task with the most episode ends .* has 3"),
    ("closed", "the dataset writer for .* is closed"),
])
def test_writer_checks_the_layout(tmp_path, case, match):
    a = chained()

    def run():
        m = {"num_finals too small": 2, "num_finals too large": 4}.get(case, 3)
        with DatasetWriter(tmp_path / "w", a["tasks"], 12, m, 3, 2) as w:
            for t in range(2):
                stop = 10 if case == "too few" and t == 1 else 12
                w.append(t, **{name: v[t, :stop] for name, v in a.items() if name != "tasks"})
            if case == "too many":
                w.append(0, **{name: v[0, :1] for name, v in a.items() if name != "tasks"})
            if case == "closed":
                w.close()
                w.append(0, **{name: v[0, :1] for name, v in a.items() if name != "tasks"})

    raises_one_line(run, match=match)
    assert [p.name for p in tmp_path.iterdir()] == (["w"] if case == "closed" else [])


@pytest.mark.parametrize("args,match", [
    (dict(tasks=np.zeros((1, 2)), min_tasks=2), "1 task.*needs at least 2"),
    (dict(num_transitions=0), "no transitions"),
    (dict(num_finals=0), "num_finals is 0"),
    (dict(num_finals=13), "num_finals is 13"),
    (dict(tasks=np.zeros(2)), "tasks has shape"),
])
def test_writer_refuses_a_bad_layout_before_writing(tmp_path, args, match):
    kwargs = dict(tasks=np.zeros((2, 2)), num_transitions=12, num_finals=3, obs_dim=3, act_dim=2) | args
    raises_one_line(DatasetWriter, tmp_path / "w", **kwargs, match=match)
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------------- bad input


def _per_task(ds: Dataset, i: int) -> dict:
    return {name: getattr(ds, name)[i] for name in PER_STEP} | {"next_observations": ds.next_obs(i)}


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
    ds.final_observations = ds.final_observations[:, :, :1]
    raises_one_line(D.save, ds, path.parent / "other", match="final_observations has shape")
    assert not (path.parent / "other").exists()
    ds = make_dataset(k=2, n=8)
    ds.final_observations = np.concatenate([ds.final_observations, ds.final_observations[:, :1]], 1)
    raises_one_line(D.validate, ds, match=r"final_observations has shape \(2, 3, 2\), expected \(2, 2, 2\)")
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


@pytest.mark.parametrize("version", [3, 0, "1", "2", None, True, 2.0])
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
    (tmp_path / "big.json").write_text("1" * 5000)  # more digits than Python converts to an int
    raises_one_line(io.read_json, tmp_path / "big.json", match="corrupt JSON")
    (tmp_path / "deep.json").write_text("[" * 100_000)
    raises_one_line(io.read_json, tmp_path / "deep.json", match="corrupt JSON")
    (tmp_path / "dir.json").mkdir()
    raises_one_line(io.read_json, tmp_path / "dir.json", match="cannot read")


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


def test_save_failing_midway_leaves_no_staging_folder(tmp_path, monkeypatch):
    """A write error while saving (e.g. a full disk) removes the staging folder and keeps the old dataset."""
    ds = _tiny_for_save_failure()
    D.save(ds, tmp_path / "data")
    before = sorted(p.name for p in tmp_path.iterdir())
    calls = {"n": 0}
    real_save = np.save

    def failing_save(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("No space left on device")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(np, "save", failing_save)
    with pytest.raises(OSError):
        D.save(ds, tmp_path / "data")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert D.load(tmp_path / "data").num_transitions == ds.num_transitions


def _tiny_for_save_failure():
    rng = np.random.default_rng(0)
    k, n, d = 2, 6, 3
    per_task = []
    for _ in range(k):
        obs = rng.normal(size=(n + 1, d)).astype(np.float32)
        per_task.append({"observations": obs[:-1], "next_observations": obs[1:],
                         "actions": rng.uniform(-1, 1, (n, 2)).astype(np.float32),
                         "rewards": rng.normal(size=n).astype(np.float32),
                         "terminals": np.zeros(n, bool), "timeouts": np.eye(1, n, n - 1, dtype=bool)[0]})
    return D.Dataset.from_tasks(per_task, np.zeros((k, 1)))
