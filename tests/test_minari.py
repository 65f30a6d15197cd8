"""Minari export and import: the round trip gives identical arrays; bad input gives a one-line error
and leaves everything that existed untouched."""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest

pytest.importorskip("minari")
h5py = pytest.importorskip("h5py")

from mbml import cli, data as D, minari_io  # noqa: E402
from mbml.errors import MbmlError  # noqa: E402
from mbml.minari_io import export_minari, import_minari  # noqa: E402
from test_cli import assert_one_line_error, run_cli  # noqa: E402

PREFIX = "mbml/synthetic-seed0"

# episode lengths and how each ends: a terminal, two time-limit truncations, an unfinished last one
EPISODES = [(5, "terminal"), (6, "timeout"), (4, "timeout"), (5, None)]


def _task(rng, obs_dim: int, act_dim: int) -> dict[str, np.ndarray]:
    """One task's transitions: within an episode next_observations[t] == observations[t+1]."""
    parts = {k: [] for k in ("observations", "next_observations", "terminals", "timeouts")}
    for length, end in EPISODES:
        states = rng.normal(size=(length + 1, obs_dim)).astype(np.float32)
        parts["observations"].append(states[:-1])
        parts["next_observations"].append(states[1:])
        parts["terminals"].append(np.arange(length) == length - 1 if end == "terminal" else np.zeros(length, bool))
        parts["timeouts"].append(np.arange(length) == length - 1 if end == "timeout" else np.zeros(length, bool))
    task = {k: np.concatenate(v) for k, v in parts.items()}
    n = len(task["terminals"])
    task.update(actions=rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
                rewards=rng.normal(size=n).astype(np.float32), x_velocity=rng.normal(size=n).astype(np.float32),
                xy=rng.normal(size=(n, 2)).astype(np.float32))
    task["next_observations"][-1] = -0.0  # bit patterns must survive too
    return task


def make_dataset(k: int = 3, obs_dim: int = 2, act_dim: int = 2, seed: int = 0) -> D.Dataset:
    rng = np.random.default_rng(seed)
    per_task = [_task(rng, obs_dim, act_dim) for i in range(k)]
    meta = {"seed": seed, "family": "synthetic", "source": "test", "note": "ü", "nested": {"a": [1, 2.5]}}
    return D.Dataset.from_tasks(per_task, rng.normal(size=(k, 3)) / 3, meta)


@pytest.fixture
def exported(tmp_path) -> tuple[D.Dataset, list[str], Path]:
    """A dataset saved in mbml's format and exported to a Minari root in tmp_path."""
    ds = make_dataset()
    D.save(ds, tmp_path / "data")
    root = tmp_path / "minari"
    ids = export_minari(tmp_path / "data", PREFIX, root=root)
    return D.load(tmp_path / "data"), ids, root


@pytest.fixture(params=["hdf5", "loaded"])
def first_pass(request, monkeypatch) -> str:
    """Import's first pass reads HDF5 files field by field; "loaded" makes it take Minari's loaded
    episodes instead, as it does for other storages."""
    if request.param == "loaded":
        monkeypatch.setattr(minari_io, "_lazy_episodes", lambda dataset: dataset.iterate_episodes())
    return request.param


def assert_same(a: D.Dataset, b: D.Dataset) -> None:
    arrays_a, arrays_b = a.arrays(), b.arrays()
    assert set(arrays_a) == set(arrays_b)
    for name, arr in arrays_a.items():
        assert arrays_b[name].dtype == arr.dtype, name
        assert np.array_equal(arrays_b[name], arr), name
        assert arrays_b[name].tobytes() == np.ascontiguousarray(arr).tobytes(), name
    assert b.meta == a.meta


# ------------------------------------------------------------------------------------ round trip


def test_round_trip_gives_identical_arrays(exported, tmp_path, first_pass):
    ds, ids, root = exported
    assert ids == [f"{PREFIX}/task{i:02d}-v0" for i in range(3)]
    import_minari(ids, tmp_path / "back", root=root)
    assert_same(ds, D.load(tmp_path / "back"))


def test_minari_layout(exported, monkeypatch):
    """What a Minari user sees: episodes split at mbml's ends, flags, task parameters in metadata."""
    import minari

    ds, ids, root = exported
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    assert set(minari.list_local_datasets()) == set(ids)
    for i, dataset_id in enumerate(ids):
        dataset = minari.load_dataset(dataset_id)
        info = dataset.storage.metadata["mbml"]
        assert info["task"] == ds.tasks[i].tolist() and info["task_index"] == i and info["num_tasks"] == 3
        assert info["family"] == "synthetic" and info["extras"] == ["x_velocity", "xy"]
        episodes = list(dataset.iterate_episodes())
        assert [len(e) for e in episodes] == [5, 6, 4, 5]
        assert [bool(e.terminations[-1]) for e in episodes] == [True, False, False, False]
        assert [bool(e.truncations[-1]) for e in episodes] == [False, True, True, False]
        nxt = np.concatenate([e.observations[1:] for e in episodes])
        assert nxt.tobytes() == ds.next_obs(i).tobytes()  # the true final states, the last one's -0.0 too
        assert all(len(e.observations) == len(e) + 1 for e in episodes)
        assert all(np.isnan(e.infos["xy"][0]).all() and len(e.infos["xy"]) == len(e) + 1 for e in episodes)


def test_export_refuses_existing_ids_unless_forced(exported, tmp_path, snapshot):
    _, ids, root = exported
    before = snapshot(root)
    with pytest.raises(MbmlError, match="already exists"):
        export_minari(tmp_path / "data", PREFIX, root=root)
    assert snapshot(root) == before
    D.save(make_dataset(seed=1), tmp_path / "other")
    assert export_minari(tmp_path / "other", PREFIX, root=root, force=True) == ids
    import_minari(ids, tmp_path / "back", root=root)
    assert_same(D.load(tmp_path / "other"), D.load(tmp_path / "back"))
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_bad_prefix(tmp_path):
    D.save(make_dataset(), tmp_path / "data")
    with pytest.raises(MbmlError, match="not a Minari namespace"):
        export_minari(tmp_path / "data", "bad prefix!", root=tmp_path / "minari")


# ------------------------------------------------------------------------------------- bad input


def _drop_field(root: Path, dataset_id: str, field: str) -> None:
    with h5py.File(root / dataset_id / "data" / "main_data.hdf5", "a") as f:
        del f["episode_1"][field]


def _nan_reward(root: Path, dataset_id: str) -> None:
    with h5py.File(root / dataset_id / "data" / "main_data.hdf5", "a") as f:
        f["episode_0"]["rewards"][1] = np.nan


def _nan_observation(root: Path, dataset_id: str) -> None:
    with h5py.File(root / dataset_id / "data" / "main_data.hdf5", "a") as f:
        f["episode_2"]["observations"][1, 0] = np.nan


def _widen_observations(root: Path, dataset_id: str) -> None:
    with h5py.File(root / dataset_id / "data" / "main_data.hdf5", "a") as f:
        del f["episode_1"]["observations"]
        f["episode_1"]["observations"] = np.zeros((7, 3), np.float32)


def _drop_task(root: Path, dataset_id: str) -> None:
    import json

    path = root / dataset_id / "data" / "metadata.json"
    meta = json.loads(path.read_text())
    del meta["mbml"]["task"]
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize("spoil,fragment", [
    (lambda root, i: _drop_field(root, i, "rewards"), "episode 1 lacks the field rewards"),
    (lambda root, i: _drop_field(root, i, "observations"), "episode 1 lacks the field observations"),
    (lambda root, i: _drop_field(root, i, "infos"), "episode 1 lacks the field infos['x_velocity']"),
    (_drop_task, "no task parameters"),
    (_nan_reward, "NaN or infinite rewards"),
    (_widen_observations, "episode 1: observations has shape (7, 3), expected (7, 2) for 6 steps"),
    (_nan_observation, "episode 2: observations of task 1 holds 1 NaN or infinite value(s)"),  # second pass
])
def test_spoilt_dataset_is_refused(exported, tmp_path, spoil, fragment, first_pass):
    _, ids, root = exported
    spoil(root, ids[1])
    with pytest.raises(MbmlError, match=re.escape(fragment)) as e:
        import_minari(ids, tmp_path / "back", root=root)
    assert ids[1] in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "back").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".back")]


def test_different_observation_space_is_refused(exported, tmp_path):
    _, ids, root = exported
    D.save(make_dataset(obs_dim=3), tmp_path / "wide")
    wide = export_minari(tmp_path / "wide", "mbml/wide", root=root)
    with pytest.raises(MbmlError, match=r"observation space shape \(3,\), .* has \(2,\)"):
        import_minari([ids[0], wide[1]], tmp_path / "back", root=root)
    assert not (tmp_path / "back").exists()


@pytest.mark.parametrize("which,fragment", [(slice(0, 1), "at least 2 tasks"), (slice(0, 0), "at least 2 tasks")])
def test_too_few_tasks(exported, tmp_path, which, fragment):
    _, ids, root = exported
    with pytest.raises(MbmlError, match=fragment):
        import_minari(ids[which], tmp_path / "back", root=root)


def test_unknown_id(exported, tmp_path):
    _, ids, root = exported
    with pytest.raises(MbmlError, match="mbml/nope-v0 not found"):
        import_minari([ids[0], "mbml/nope-v0"], tmp_path / "back", root=root)


def test_existing_output_folder_is_untouched(exported, tmp_path, snapshot):
    ds, ids, root = exported
    out = tmp_path / "data"  # the exported dataset itself
    before = snapshot(out)
    with pytest.raises(MbmlError, match="already exists"):
        import_minari(ids, out, root=root)
    _drop_field(root, ids[2], "actions")
    with pytest.raises(MbmlError, match="episode 1 lacks the field"):
        import_minari(ids, out, root=root, force=True)
    assert snapshot(out) == before
    _nan_observation(root, ids[1])  # found by the second pass, while the arrays are being written
    with pytest.raises(MbmlError, match="observations of task 1 holds"):
        import_minari(ids[:2], out, root=root, force=True)
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "minari"]  # no staging folder left


# ------------------------------------------------------------------------------------------- CLI


def run_ok(argv, capsys) -> str:
    """`mbml ARGV` in this process, which must succeed: its stdout."""
    capsys.readouterr()
    cli.main([str(a) for a in argv])
    return capsys.readouterr().out


def test_cli_round_trip_from_a_run_folder(tmp_path, capsys):
    ds = make_dataset()
    D.save(ds, tmp_path / "run" / "seed_3" / "data")
    root = tmp_path / "minari"
    ids = run_ok(["export-minari", "--out", tmp_path / "run", "--seed", 3, "--prefix", PREFIX, "--root", root],
                 capsys).split()
    assert len(ids) == 3
    run_ok(["import-minari", "--ids", *ids, "--out", tmp_path / "back", "--root", root], capsys)
    assert_same(ds, D.load(tmp_path / "back"))


@pytest.mark.parametrize("args,fragments", [
    (["export-minari", "--out", "{tmp}/nothing", "--prefix", "mbml/x"], ["holds no mbml dataset"]),
    (["import-minari", "--ids", "mbml/a-v0", "--out", "{tmp}/back"], ["at least 2 tasks"]),
    (["import-minari", "--ids", "mbml/a-v0", "mbml/b-v0", "--out", "{tmp}/back"], ["mbml/a-v0 not found"]),
])
def test_cli_errors_are_one_line(tmp_path, capsys, args, fragments):
    (tmp_path / "minari").mkdir()
    argv = [a.format(tmp=tmp_path) for a in args] + ["--root", tmp_path / "minari"]
    code, _, err = run_cli(argv, capsys)
    assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "back").exists()


def test_cli_mismatched_spaces(exported, tmp_path, capsys):
    _, ids, root = exported
    D.save(make_dataset(obs_dim=3), tmp_path / "wide")
    wide = export_minari(tmp_path / "wide", "mbml/wide", root=root)
    code, _, err = run_cli(["import-minari", "--ids", ids[0], wide[1], "--out", tmp_path / "back", "--root", root],
                           capsys)
    assert_one_line_error(code, err, "observation space shape", wide[1])
    assert not (tmp_path / "back").exists()


def test_cli_without_minari(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "minari", None)  # `import minari` raises ImportError
    D.save(make_dataset(), tmp_path / "data")
    code, _, err = run_cli(["export-minari", "--out", tmp_path / "data", "--prefix", PREFIX,
                            "--root", tmp_path / "minari"], capsys)
    assert_one_line_error(code, err, "pip install 'mbml[minari]'")
    assert not (tmp_path / "minari").exists()


@pytest.mark.parametrize("name,options", [
    ("export-minari", ["--out", "--prefix", "--seed", "--root", "--force"]),
    ("import-minari", ["--ids", "--out", "--tasks", "--family", "--root", "--force"]),
])
def test_help(capsys, name, options):
    code, out, _ = run_cli([name, "--help"], capsys)
    assert code == 0
    for option in options:
        assert option in out


def test_import_of_datasets_made_elsewhere(tmp_path, monkeypatch):
    """A Minari dataset written without mbml imports once its metadata holds the task parameters."""
    import gymnasium as gym
    import minari
    from minari.data_collector import EpisodeBuffer

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    rng = np.random.default_rng(0)
    ids = []
    for i in range(2):
        episodes = [EpisodeBuffer(observations=rng.normal(size=(5, 3)).astype(np.float32),
                                  actions=rng.uniform(-1, 1, (4, 1)).astype(np.float32),
                                  rewards=rng.normal(size=4).astype(np.float32),
                                  terminations=np.eye(4, dtype=bool)[3], truncations=np.zeros(4, bool))
                    for _ in range(2)]
        with pytest.warns(UserWarning):
            dataset = minari.create_dataset_from_buffers(
                f"elsewhere/task{i}-v0", episodes, observation_space=gym.spaces.Box(-1, 1, (3,), np.float32),
                action_space=gym.spaces.Box(-1, 1, (1,), np.float32))
        dataset.storage.update_metadata({"mbml": {"task": [float(i), 1.0]}})
        ids.append(f"elsewhere/task{i}-v0")
    ds = import_minari(ids, tmp_path / "back")
    assert ds.observations.shape == (2, 8, 3) and ds.terminals.sum() == 4 and not ds.timeouts.any()
    assert ds.tasks.tolist() == [[0.0, 1.0], [1.0, 1.0]]
    assert ds.meta == {"source": "minari", "minari_ids": ids}


def _elsewhere(root: Path, monkeypatch, episodes_of) -> list[str]:
    """Two Minari datasets written without mbml, episodes from `episodes_of(rng)`."""
    import gymnasium as gym
    import minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    rng = np.random.default_rng(0)
    ids = []
    for i in range(2):
        with pytest.warns(UserWarning):
            dataset = minari.create_dataset_from_buffers(
                f"elsewhere/task{i}-v0", episodes_of(rng), observation_space=gym.spaces.Box(-1, 1, (3,), np.float32),
                action_space=gym.spaces.Box(-1, 1, (1,), np.float32))
        dataset.storage.update_metadata({"mbml": {"task": [float(i), 1.0]}})
        ids.append(f"elsewhere/task{i}-v0")
    return ids


def test_import_cuts_unflagged_episode_ends_that_break_the_chain(tmp_path, monkeypatch, first_pass):
    """An episode that ends with neither flag set and whose last state is not the next episode's first
    gets `timeouts` on its last step, so every next state survives; one that continues into the next
    episode (same state, bit for bit) and the task's last episode are left as they are."""
    from minari.data_collector import EpisodeBuffer

    def episodes_of(rng):
        states = [rng.normal(size=(5, 3)).astype(np.float32) for _ in range(3)]
        states[2][0] = states[1][-1]  # episode 1 continues into episode 2
        return [EpisodeBuffer(observations=s, actions=rng.uniform(-1, 1, (4, 1)).astype(np.float32),
                              rewards=rng.normal(size=4).astype(np.float32), terminations=np.zeros(4, bool),
                              truncations=np.zeros(4, bool)) for s in states]

    ids = _elsewhere(tmp_path / "minari", monkeypatch, episodes_of)
    ds = import_minari(ids, tmp_path / "back")
    np.testing.assert_array_equal(np.flatnonzero(ds.timeouts[0]), [3])
    assert not ds.terminals.any() and ds.final_observations.shape == (2, 2, 3)
    import minari

    for i, dataset_id in enumerate(ids):
        episodes = list(minari.load_dataset(dataset_id).iterate_episodes())
        nxt = np.concatenate([e.observations[1:] for e in episodes])
        assert ds.next_obs(i).tobytes() == nxt.tobytes()


@pytest.mark.parametrize("version,ok", [(1, True), (2, True), (3, False)])
def test_import_of_an_export_by_another_mbml_version(exported, tmp_path, version, ok):
    """Versions 1 and 2 of the dataset format export the same Minari layout."""
    import json

    ds, ids, root = exported
    for dataset_id in ids:
        path = root / dataset_id / "data" / "metadata.json"
        meta = json.loads(path.read_text())
        meta["mbml"]["version"] = version
        path.write_text(json.dumps(meta))
    if ok:
        assert_same(ds, import_minari(ids, tmp_path / "back", root=root))
    else:
        with pytest.raises(MbmlError, match="format version 3; this mbml reads 1 and 2"):
            import_minari(ids, tmp_path / "back", root=root)


def test_tasks_of_different_lengths_are_refused(tmp_path, monkeypatch):
    from minari.data_collector import EpisodeBuffer

    made = []

    def episodes_of(rng):  # task 0: two episodes of 4 steps, task 1: three
        made.append(None)
        return [EpisodeBuffer(observations=rng.normal(size=(5, 3)).astype(np.float32),
                              actions=rng.uniform(-1, 1, (4, 1)).astype(np.float32),
                              rewards=rng.normal(size=4).astype(np.float32), terminations=np.eye(4, dtype=bool)[3],
                              truncations=np.zeros(4, bool)) for _ in range(len(made) + 1)]

    ids = _elsewhere(tmp_path / "minari", monkeypatch, episodes_of)
    with pytest.raises(MbmlError, match=re.escape(f"different numbers of transitions ({ids[0]}: 8, {ids[1]}: 12)")):
        import_minari(ids, tmp_path / "back")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["minari"]


def test_first_pass_does_not_load_hdf5_episodes(exported, tmp_path, monkeypatch):
    """With HDF5 storage only the second pass loads whole episodes (observations included)."""
    from minari.dataset.minari_dataset import MinariDataset

    _, ids, root = exported
    loaded = []
    iterate = MinariDataset.iterate_episodes
    monkeypatch.setattr(MinariDataset, "iterate_episodes", lambda self, *a: loaded.append(self) or iterate(self, *a))
    import_minari(ids, tmp_path / "back", root=root)
    assert len(loaded) == len(ids)


def _large(root: Path, k: int, episodes: int, steps: int, obs_dim: int) -> list[str]:
    """K Minari datasets (HDF5) of `episodes` x `steps` transitions, written an episode at a time."""
    import gymnasium as gym
    import minari
    from minari.data_collector import EpisodeBuffer

    rng = np.random.default_rng(0)
    ids = [f"large/task{i}-v0" for i in range(k)]
    for i, dataset_id in enumerate(ids):
        with pytest.warns(UserWarning):
            dataset = minari.create_dataset_from_buffers(
                dataset_id, [], observation_space=gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32),
                action_space=gym.spaces.Box(-1, 1, (2,), np.float32))
        dataset.storage.update_episodes(
            EpisodeBuffer(observations=rng.normal(size=(steps + 1, obs_dim)).astype(np.float32),
                          actions=rng.uniform(-1, 1, (steps, 2)).astype(np.float32),
                          rewards=rng.normal(size=steps).astype(np.float32), terminations=np.zeros(steps, bool),
                          truncations=np.arange(steps) == steps - 1,
                          infos={"xy": rng.normal(size=(steps + 1, 2)).astype(np.float32)})
            for _ in range(episodes))
        dataset.storage.update_metadata({"mbml": {"task": [float(i)], "extras": ["xy"]}})
    return ids


def test_import_memory_does_not_grow_with_the_dataset(tmp_path, monkeypatch):
    """Import holds about an episode in memory, not the dataset (numpy's allocations are traced)."""
    import tracemalloc

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    k, episodes, steps, obs_dim = 4, 40, 250, 200
    ids = _large(tmp_path / "minari", k, episodes, steps, obs_dim)
    observations = k * episodes * steps * obs_dim * 4  # 32 MB
    import_minari(ids[:2], tmp_path / "warm")  # modules and caches loaded before tracing
    tracemalloc.start()
    try:
        import_minari(ids, tmp_path / "back")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < observations / 8, f"import peaked at {peak / 2 ** 20:.1f} MiB for {observations / 2 ** 20:.0f} MiB"
    ds = D.load(tmp_path / "back")
    assert ds.observations.shape == (k, episodes * steps, obs_dim) and ds.final_observations.shape[1] == episodes
    import minari

    last = list(minari.load_dataset(ids[3]).iterate_episodes([episodes - 1]))[0]
    assert ds.next_obs(3)[-steps:].tobytes() == last.observations[1:].tobytes()


# ------------------------------------------------------------- data made elsewhere: --tasks, --family


def _pendulum(root: Path, monkeypatch, gravities, episodes: int = 3, steps: int = 50, rescale: bool = True):
    """One Minari dataset per gravity of gymnasium's Pendulum-v1 (a task parameter Minari's metadata
    cannot hold), recorded by Minari's own DataCollector from random actions; their ids."""
    import gymnasium as gym
    from minari import DataCollector

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    ids = []
    for g in gravities:
        env = gym.make("Pendulum-v1", g=g, max_episode_steps=steps)
        env = DataCollector(gym.wrappers.RescaleAction(env, -1.0, 1.0) if rescale else env)
        env.action_space.seed(0)
        for episode in range(episodes):
            env.reset(seed=episode)
            done = False
            while not done:
                _, _, terminated, truncated, _ = env.step(env.action_space.sample())
                done = terminated or truncated
        with warnings.catch_warnings():  # author, e-mail, code permalink... are optional
            warnings.simplefilter("ignore", UserWarning)
            env.create_dataset(f"pendulum/g{g:g}-v0", algorithm_name="random")
        env.close()
        ids.append(f"pendulum/g{g:g}-v0")
    return ids


@pytest.mark.filterwarnings("ignore:.*precision lowered by casting")  # Pendulum's float64 bounds, in Minari
def test_datacollector_datasets_of_a_stock_env_import_with_tasks_and_train_teachers(tmp_path, monkeypatch, capsys,
                                                                                      snapshot):
    """The round trip of the README: a user's Pendulum data for two gravities, recorded with Minari's
    DataCollector, import with --tasks into a run folder without a family; `mbml teachers` trains
    the two teachers (no simulator: no online evaluation, the last checkpoint kept), and a stage that
    needs a simulator says so in one line and changes nothing."""
    import minari

    from mbml import io
    from mbml.pipeline import Run

    ids = _pendulum(tmp_path / "minari", monkeypatch, (5.0, 15.0))
    run = tmp_path / "run"
    run_ok(["import-minari", "--ids", *ids, "--tasks", "5", "15", "--out", run / "seed_0" / "data"], capsys)
    ds = D.load(run / "seed_0" / "data")
    assert ds.tasks.tolist() == [[5.0], [15.0]] and ds.observations.shape == (2, 150, 3)
    assert "family" not in ds.meta and ds.meta["minari_ids"] == ids
    first = list(minari.load_dataset(ids[1]).iterate_episodes())[0]
    assert ds.actions[1, :50].tobytes() == np.asarray(first.actions, np.float32).tobytes()
    assert ds.timeouts.sum() == 6 and not ds.terminals.any()  # three 50-step episodes per task

    run_ok(["teachers", "--out", run, "--preset", "smoke", "--quiet"], capsys)
    assert io.read_json(run / "config.json")["family"] is None
    assert io.read_json(run / "seed_0" / "teachers.json") == {"eval_curve": [], "eval_every": 20, "best": None}
    opened = Run.open(run)
    assert (opened.family.obs_dim, opened.family.act_dim, opened.family.simulated) == (3, 1, False)
    teachers = opened.load_teachers(0)
    leaves = jax.tree.leaves(teachers)
    assert all(leaf.shape[0] == 2 and np.isfinite(leaf).all() for leaf in leaves)
    untrained = jax.tree.leaves(opened.teacher_template(2))
    assert any(not np.array_equal(a, b) for a, b in zip(leaves, untrained))

    before = snapshot(run)
    code, _, err = run_cli(["distill", "--out", run, "--quiet"], capsys)
    assert_one_line_error(code, err, "`mbml distill` needs a simulator", "no family", "`mbml teachers`")
    assert snapshot(run) == before


def test_import_refuses_actions_outside_the_unit_box(tmp_path, monkeypatch, capsys):
    ids = _pendulum(tmp_path / "minari", monkeypatch, (5.0, 15.0), episodes=1, steps=5, rescale=False)
    code, _, err = run_cli(["import-minari", "--ids", *ids, "--tasks", "5", "15", "--out", tmp_path / "back"], capsys)
    assert_one_line_error(code, err, ids[0], "actions in [-2.0, 2.0]", "RescaleAction(env, -1, 1)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["minari"]


def test_tasks_given_override_and_complete_the_metadata(tmp_path, monkeypatch):
    """`tasks` entries win over metadata['mbml']['task']; a None entry falls back to it."""
    from minari.data_collector import EpisodeBuffer

    def episodes_of(rng):
        return [EpisodeBuffer(observations=rng.normal(size=(5, 3)).astype(np.float32),
                              actions=rng.uniform(-1, 1, (4, 1)).astype(np.float32),
                              rewards=rng.normal(size=4).astype(np.float32), terminations=np.eye(4, dtype=bool)[3],
                              truncations=np.zeros(4, bool))]

    ids = _elsewhere(tmp_path / "minari", monkeypatch, episodes_of)  # metadata tasks [0, 1] and [1, 1]
    ds = import_minari(ids, tmp_path / "back", tasks=[[7.0, 8.0], None])
    assert ds.tasks.tolist() == [[7.0, 8.0], [1.0, 1.0]]
    with pytest.raises(MbmlError, match=re.escape("--tasks gives 1 tasks for 2 dataset ids")):
        import_minari(ids, tmp_path / "again", tasks=[[7.0, 8.0]])
    with pytest.raises(MbmlError, match=re.escape("task parameters have different lengths: [1, 2]")):
        import_minari(ids, tmp_path / "again", tasks=[[7.0], None])
    assert not (tmp_path / "again").exists()


def test_family_is_checked_against_the_data_and_recorded(tmp_path, monkeypatch, capsys):
    """--family: the data must have its sizes and task length; it is recorded in the dataset's meta,
    and a run folder made on the data takes it."""
    import gymnasium as gym
    import minari
    from minari.data_collector import EpisodeBuffer

    from mbml.pipeline import first_dataset

    def episodes_of(rng):  # point-nav's sizes: 2-D observations and actions
        return [EpisodeBuffer(observations=rng.normal(size=(5, 2)).astype(np.float32),
                              actions=rng.uniform(-1, 1, (4, 2)).astype(np.float32),
                              rewards=rng.normal(size=4).astype(np.float32), terminations=np.zeros(4, bool),
                              truncations=np.eye(4, dtype=bool)[3])]

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    rng = np.random.default_rng(0)
    ids = []
    for i in range(2):
        with pytest.warns(UserWarning):
            minari.create_dataset_from_buffers(f"nav/task{i}-v0", episodes_of(rng),
                                               observation_space=gym.spaces.Box(-np.inf, np.inf, (2,), np.float32),
                                               action_space=gym.spaces.Box(-1, 1, (2,), np.float32))
        ids.append(f"nav/task{i}-v0")
    code, _, err = run_cli(["import-minari", "--ids", *ids, "--tasks", "1", "2", "--family", "point-nav",
                            "--out", tmp_path / "back"], capsys)
    assert_one_line_error(code, err, "the datasets' tasks have 1 parameters, family point-nav's have 2")
    code, _, err = run_cli(["import-minari", "--ids", *ids, "--tasks", "1,0", "0,1", "--family", "ant-dir",
                            "--out", tmp_path / "back"], capsys)
    assert_one_line_error(code, err, "obs/action sizes 2/2, family ant-dir has 111/8")
    code, _, err = run_cli(["import-minari", "--ids", *ids, "--tasks", "1,0", "0,1", "--family", "bogus",
                            "--out", tmp_path / "back"], capsys)
    assert_one_line_error(code, err, "unknown family 'bogus'")
    assert not (tmp_path / "back").exists()

    run_ok(["import-minari", "--ids", *ids, "--tasks", "1,0", "0,1", "--family", "point-nav",
            "--out", tmp_path / "run" / "seed_0" / "data"], capsys)
    assert D.load(tmp_path / "run" / "seed_0" / "data").meta["family"] == "point-nav"
    assert D.read_meta(first_dataset(tmp_path / "run"))["family"] == "point-nav"
