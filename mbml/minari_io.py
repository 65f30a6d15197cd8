"""Minari import and export of multi-task datasets (`pip install mbml[minari]`).

Layout: one Minari dataset per task, with ids `PREFIX/taskII-v0` (II = the task index, two digits
or more), so PREFIX is a Minari namespace holding the K tasks. Each dataset has

* observation space `Box(-inf, inf, (obs,), float32)`, action space `Box(-1, 1, (act,), float32)`;
* episodes cut at mbml's episode ends (`terminals | timeouts`), with `terminations` = terminals and
  `truncations` = timeouts. An episode's `observations` hold T+1 states: s_0..s_{T-1} and the last
  next state, so `observations[1:]` are the transitions' next states. A task's unfinished last
  episode ends with neither flag set;
* per-step extras (`extra_NAME` in mbml) as `infos[NAME]`, T+1 rows in Minari's convention (row
  t+1 belongs to step t; row 0, the reset, is NaN);
* `metadata["mbml"]`: {"format", "version", "family", "task_index", "num_tasks", "task" (the task
  parameters, a list of floats), "extras" (the names in infos), "meta" (mbml's free-form meta)}.

Import reads datasets in the order given (task i = the i-th id) and needs only the standard episode
fields and each task's parameters, from `tasks` (`mbml import-minari --tasks`: `mbml.task_params`) or else
`metadata["mbml"]["task"]`, so datasets made elsewhere (Minari's `DataCollector`) import too. mbml derives a
next state from the following transition's state within an episode (dataset format version 2), so
an episode that ends with neither flag set, and whose last next state is not the next episode's
first state, is imported with `timeouts` set on its last step (a cut, bootstrapped like a time limit).
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from mbml import data as D
from mbml.dataset_writer import DatasetWriter
from mbml.errors import MbmlError, one_line as _one_line

_FIELDS = ("observations", "actions", "rewards", "terminations", "truncations")
_LOAD_ERRORS = (ValueError, KeyError, OSError, AssertionError, TypeError, ImportError)


def _minari():
    """The minari module, or a one-line MbmlError saying how to install it."""
    try:
        import h5py  # noqa: F401  (Minari's default storage; its absence only shows when writing)
        import minari
    except ImportError as e:
        raise MbmlError(f"Minari is not installed ({e}); pip install 'mbml[minari]'") from None
    return minari


@contextlib.contextmanager
def _root(root: Path | None):
    """Point Minari at `root` (MINARI_DATASETS_PATH) for the block; yields the resolved root folder."""
    from minari.storage.datasets_root_dir import get_dataset_path

    old = os.environ.get("MINARI_DATASETS_PATH")
    if root is not None:
        os.environ["MINARI_DATASETS_PATH"] = str(Path(root).absolute())
    try:
        yield Path(get_dataset_path())
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def _open(minari, dataset_id: str, root: Path):
    """A loaded Minari dataset and its `mbml` metadata, or a one-line MbmlError."""
    if not (root / dataset_id / "data").is_dir():
        raise MbmlError(f"Minari dataset {dataset_id} not found in {root}")
    try:
        dataset = minari.load_dataset(dataset_id)
    except _LOAD_ERRORS as e:
        raise MbmlError(f"Minari dataset {dataset_id} cannot be read: {_one_line(e)}") from None
    info = dataset.storage.metadata.get("mbml")
    info = info if isinstance(info, dict) else {}  # {}: made elsewhere
    if info.get("version", D.VERSION) not in D.READS:  # the Minari layout is the same for both
        raise MbmlError(f"Minari dataset {dataset_id} was written with mbml dataset format version "
                        f"{info['version']}; this mbml reads {' and '.join(map(str, D.READS))}")
    return dataset, info


def _check_spaces(datasets: dict) -> None:
    """Every dataset has 1-D Box observation and action spaces of the first one's shapes."""
    import gymnasium as gym

    first_id, first = next(iter(datasets.items()))
    for dataset_id, dataset in datasets.items():
        for kind in ("observation", "action"):
            space = getattr(dataset, f"{kind}_space")
            if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
                raise MbmlError(f"Minari dataset {dataset_id} has {kind} space {space}; mbml needs a 1-D Box")
            want = getattr(first, f"{kind}_space").shape
            if space.shape != want:
                raise MbmlError(f"Minari dataset {dataset_id} has {kind} space shape {space.shape}, "
                                f"{first_id} has {want}; all tasks must share their spaces")
        low, high = dataset.action_space.low, dataset.action_space.high
        if not (np.all(low >= -1) and np.all(high <= 1)):  # the learners' actions are tanh-squashed
            raise MbmlError(f"Minari dataset {dataset_id} has actions in [{low.min()}, {high.max()}]; mbml's "
                            "are in [-1, 1]: collect with gymnasium.wrappers.RescaleAction(env, -1, 1)")


@dataclass
class _Plan:
    """What the first pass learns about one task, without holding its episodes in memory."""

    lengths: list[int] = field(default_factory=list)
    """Steps per episode."""
    cuts: set[int] = field(default_factory=set)
    """Episodes whose last step gets `timeouts` (a broken chain, see the module docstring)."""
    ends: int = 0
    """Steps with `terminals | timeouts`, cuts included."""
    open_end: bool = False
    """The task's last transition ends no episode (its next state is one more row of `final_observations`)."""

    @property
    def num_transitions(self) -> int:
        return sum(self.lengths)

    @property
    def num_finals(self) -> int:
        return self.ends + self.open_end


def _survey(dataset, dataset_id: str, extras: list[str], dims: tuple[int, int], shapes: dict) -> _Plan:
    """The first pass over a task's episodes: every check of the input, and what the second pass needs.
    `dims` are the observation and action sizes; `shapes` the extras' per-step shapes (filled by the
    first episode that has them)."""
    plan = _Plan()
    last = None  # the previous episode's last next state, where that episode ends with neither flag

    def visit(j: int, ep) -> None:
        nonlocal last
        _check_episode(ep, dataset_id, j, extras, dims, shapes)
        steps, rewards = len(ep.rewards), np.asarray(ep.rewards)
        if not np.isfinite(rewards).all():
            raise MbmlError(f"Minari dataset {dataset_id} has NaN or infinite rewards")
        if last is not None and (not steps or _bits(ep.observations[0:1]) != last):
            plan.cuts.add(j - 1)
            plan.ends, plan.open_end = plan.ends + 1, False
        plan.lengths.append(steps)
        last = None
        if steps:
            ends = np.asarray(ep.terminations, bool) | np.asarray(ep.truncations, bool)
            plan.ends, plan.open_end = plan.ends + int(ends.sum()), not ends[-1]
            last = _bits(ep.observations[steps:steps + 1]) if plan.open_end else None

    _each_episode(dataset_id, _lazy_episodes(dataset), visit)
    if not plan.lengths:
        raise MbmlError(f"Minari dataset {dataset_id} has no episodes")
    return plan


def _bits(rows) -> bytes:
    return np.asarray(rows, np.float32).tobytes()


def _lazy_episodes(dataset):
    """The episodes for the first pass. In Minari's HDF5 storage their fields are the file's h5py
    datasets, read only as far as they are sliced (so the observations are not loaded); other
    storages give Minari's episodes, loaded one at a time."""
    import h5py

    file = Path(dataset.storage.data_path) / "main_data.hdf5"
    if getattr(dataset.storage, "FORMAT", None) != "hdf5" or not file.is_file():
        yield from dataset.iterate_episodes()
        return
    with h5py.File(file, "r") as f:
        for i in dataset.episode_indices:
            group = f[f"episode_{i}"]
            yield SimpleNamespace(**{name: group.get(name) for name in _FIELDS}, infos=group.get("infos"))


def _each_episode(dataset_id: str, episodes, visit) -> None:
    """`visit(j, episode)` for the episodes in turn; read errors (a missing field, a corrupt file)
    become one-line MbmlErrors."""
    j = 0  # the episode being read
    try:
        for ep in episodes:
            visit(j, ep)
            j += 1
    except KeyError as e:  # h5py: "Unable to open object (object 'rewards' doesn't exist)"
        name = re.search(r"object '([^']+)'", str(e))
        raise MbmlError(f"Minari dataset {dataset_id} episode {j} lacks the field "
                        f"{name.group(1) if name else _one_line(e)}") from None
    except (ValueError, OSError, TypeError) as e:
        raise MbmlError(f"Minari dataset {dataset_id} cannot be read: {_one_line(e)}") from None


def _check_episode(ep, dataset_id: str, j: int, extras: list[str], dims: tuple[int, int], shapes: dict) -> None:
    """An episode has every field, with T+1 observations (and extras rows) for T steps, of the
    datasets' sizes (see `_survey`)."""
    missing = [n for n in _FIELDS if getattr(ep, n, None) is None]
    missing += [f"infos[{n!r}]" for n in extras if n not in (ep.infos or {})]
    if missing:
        raise MbmlError(f"Minari dataset {dataset_id} episode {j} lacks the field {missing[0]}")
    steps = len(ep.rewards)
    rows = [("observations", ep.observations, (steps + 1, dims[0])), ("actions", ep.actions, (steps, dims[1])),
            ("rewards", ep.rewards, (steps,)), ("terminations", ep.terminations, (steps,)),
            ("truncations", ep.truncations, (steps,))]
    for n in extras:
        info = ep.infos[n]
        rows.append((f"infos[{n!r}]", info, (steps + 1, *shapes.setdefault(n, tuple(getattr(info, "shape", ())[1:])))))
    for name, arr, want in rows:
        got = getattr(arr, "shape", None)
        if got != want:
            raise MbmlError(f"Minari dataset {dataset_id} episode {j}: {name} has shape {got}, "
                            f"expected {want} for {steps} steps")


def _fill(writer: DatasetWriter, task: int, dataset, dataset_id: str, extras: list[str], plan: _Plan) -> None:
    """The second pass: task `task`'s episodes into `writer`, one at a time."""
    def visit(j: int, ep) -> None:
        if j >= len(plan.lengths) or len(ep.rewards) != plan.lengths[j]:
            raise MbmlError(f"Minari dataset {dataset_id} changed while it was being imported (episode {j})")
        obs, timeouts = np.asarray(ep.observations), np.array(ep.truncations, bool)
        if j in plan.cuts:
            timeouts[-1] = True
        try:
            writer.append(task, observations=obs[:-1], actions=ep.actions, rewards=ep.rewards,
                          next_observations=obs[1:], terminals=ep.terminations, timeouts=timeouts,
                          **{n: np.asarray(ep.infos[n])[1:] for n in extras})
        except MbmlError as e:
            raise MbmlError(f"Minari dataset {dataset_id} episode {j}: {e}") from None

    _each_episode(dataset_id, dataset.iterate_episodes(), visit)


def import_minari(dataset_ids: list[str], out_dir: Path, root: Path | None = None, force: bool = False,
                  tasks: list[list[float] | None] | None = None, family: str | None = None) -> D.Dataset:
    """Build an mbml dataset folder at `out_dir` from Minari datasets, one per task, in the order given.

    Task i's parameters are `tasks[i]` (one entry per id, None to read them) or else its
    `metadata["mbml"]["task"]`. `family` (an mbml family) is checked against the data (sizes, task
    length, the extras its true reward reads) and recorded in the meta; without it the meta keeps
    the family an mbml export recorded, if any (a run folder on data without one runs only the
    stages that need no simulator: `steps.OFFLINE_STAGES`).

    Two passes keep one episode in memory at a time, never the dataset. The first reads what is cheap
    (episode lengths, flags and rewards; with Minari's HDF5 storage only one row of observations per
    episode) and makes every check of the input before anything is written. The second streams the
    episodes into a `mbml.data.DatasetWriter`: memory-mapped arrays in a staging folder, checked as
    they are written and moved into place once complete. An existing `out_dir` is refused unless
    `force`, which replaces it; on any error it is left as it was.
    """
    minari = _minari()
    out_dir = Path(out_dir)
    if len(dataset_ids) < 2:
        raise MbmlError(f"multi-task batch RL needs at least 2 tasks (one Minari dataset each), got {len(dataset_ids)}")
    if len(set(dataset_ids)) != len(dataset_ids):
        raise MbmlError(f"Minari dataset ids repeat: {list(dataset_ids)}")
    if out_dir.exists() and not force:
        raise MbmlError(f"{out_dir} already exists; choose another --out or use --force to replace it")
    if root is not None and not Path(root).is_dir():
        raise MbmlError(f"Minari root {root} is not a folder")
    if tasks is not None and len(tasks) != len(dataset_ids):
        raise MbmlError(f"--tasks gives {len(tasks)} tasks for {len(dataset_ids)} dataset ids")
    fam = None
    if family is not None:
        from mbml.families import get_family

        fam = get_family(family)
    with _root(root) as resolved:
        opened = {i: _open(minari, i, resolved) for i in dataset_ids}
        _check_spaces({i: d for i, (d, _) in opened.items()})
        infos = [info for _, info in opened.values()]
        params = [_task(i, given, info) for i, given, info in zip(dataset_ids, tasks or [None] * len(infos), infos)]
        sizes = {len(task) for task in params}
        if len(sizes) != 1:
            raise MbmlError(f"the datasets' task parameters have different lengths: {sorted(sizes)}")
        extras = [str(n) for n in infos[0].get("extras", [])]
        first = next(iter(opened.values()))[0]
        dims = (first.observation_space.shape[0], first.action_space.shape[0])
        if fam is not None:
            _check_family(fam, dims, len(params[0]), extras)
        shapes: dict[str, tuple] = {}
        plans = [_survey(d, i, extras, dims, shapes) for i, (d, _) in opened.items()]
        counts = [plan.num_transitions for plan in plans]
        if len(set(counts)) != 1:
            each = ", ".join(f"{i}: {c}" for i, c in zip(dataset_ids, counts))
            raise MbmlError(f"tasks have different numbers of transitions ({each}); cut them to the same length")
        meta = infos[0].get("meta")
        if not isinstance(meta, dict):  # not written by mbml: record where it came from
            meta = {"source": "minari", "minari_ids": list(dataset_ids)}
        if fam is not None:
            meta = {**meta, "family": fam.name}
        with DatasetWriter(out_dir, np.array(params, np.float64), counts[0],
                             max(plan.num_finals for plan in plans), *dims, extras={n: shapes[n] for n in extras},
                             meta=meta, min_tasks=2) as writer:
            for task, (dataset_id, (dataset, _)) in enumerate(opened.items()):
                _fill(writer, task, dataset, dataset_id, extras, plans[task])
    return writer.close()


def _task(dataset_id: str, given: list[float] | None, info: dict) -> list[float]:
    """A task's parameters: those given (`--tasks`), else its `metadata["mbml"]["task"]`."""
    if given is not None:
        return given
    task = info.get("task")
    if not isinstance(task, list) or not task or not all(type(x) in (int, float) for x in task):
        raise MbmlError(f"Minari dataset {dataset_id} has no task parameters: give them with --tasks "
                        "(or in its metadata['mbml']['task'])")
    return [float(x) for x in task]


def _check_family(fam, dims: tuple[int, int], task_dim: int, extras: list[str]) -> None:
    """The data fit `fam`: its observation and action sizes, its tasks' length, its true reward's extras."""
    if dims != (fam.obs_dim, fam.act_dim):
        raise MbmlError(f"the datasets have obs/action sizes {dims[0]}/{dims[1]}, family {fam.name} has "
                        f"{fam.obs_dim}/{fam.act_dim}")
    if task_dim != fam.train_tasks.shape[1]:
        raise MbmlError(f"the datasets' tasks have {task_dim} parameters, family {fam.name}'s have "
                        f"{fam.train_tasks.shape[1]}")
    missing = [n for n in fam.extras if n not in extras]
    if missing:
        raise MbmlError(f"family {fam.name}'s true reward needs infos[{missing[0]!r}], which the datasets lack")


from mbml.minari_export import _publish, export_ids, export_minari  # noqa: E402, F401 (the export half, re-exported)
