"""The multi-task dataset format (version 2).

A dataset is a folder holding one `.npy` file per array, each with a leading task axis, and
`meta.json`:

| array               | shape        | dtype   | meaning                                              |
|---------------------|--------------|---------|------------------------------------------------------|
| observations        | [K, N, obs]  | float32 | s_t                                                  |
| actions             | [K, N, act]  | float32 | a_t in [-1, 1]                                       |
| rewards             | [K, N]       | float32 | r_t                                                  |
| final_observations  | [K, M, obs]  | float32 | s_{t+1} where t ends an episode or is the last one   |
| terminals           | [K, N]       | bool    | the environment terminated (no bootstrapping)        |
| timeouts            | [K, N]       | bool    | the episode was cut by its time limit (bootstrap)    |
| tasks               | [K, P]       | float64 | each task's parameters                               |
| extra_<name>        | [K, N, ...]  | float32 | per-step quantities a family's true reward needs     |

Transitions are in collection order (each task's batch is its agent's learning history); an
episode ends where `terminals | timeouts`. Next observations are not stored as a second copy: the
next observation of transition t is `observations[t + 1]`, except at episode ends and at each
task's last transition, whose true next observations are the rows of `final_observations`, in
order (row r of task k: the r-th such transition of task k; M is the largest number of them in
any task, and the unused rows of the other tasks are zero). `Dataset.next_obs(task)` gives one
task's next observations; `Dataset.from_tasks` / `from_arrays` take them and check that they
follow this rule. `mbml.dataset_writer.DatasetWriter` writes a folder a piece at a time.

Arrays load memory-mapped (nothing is read twice into RAM), files are never unpickled, and
everything is validated on load. Version 1 folders (a full `next_observations` [K, N, obs] instead
of `final_observations`) still load: the end rows are read from the memory-mapped file and the
rest is checked against the observations.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mbml.errors import MbmlError, one_line
from mbml.io import clear_stale_staging, read_json, replace_dir, restore_replaced, staging_prefix, write_json

FORMAT, VERSION = "mbml-dataset", 2
READS = (1, 2)
"""Format versions `load` reads (version 1 stored `next_observations` in full)."""
_CORE = {"observations": np.float32, "actions": np.float32, "rewards": np.float32,
         "final_observations": np.float32, "terminals": np.bool_, "timeouts": np.bool_}
_DTYPES = {**_CORE, "tasks": np.float64, "next_observations": np.float32}
"""The dtype of every array a folder holds (extras: float32)."""
_GIVEN = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")
"""The per-transition arrays users give (`from_tasks`, `from_arrays`)."""
_CHECK_BYTES = 2 ** 24
"""Bytes of next observations compared per step (so memory-mapped data are read a slice at a time)."""


def final_mask(terminals: np.ndarray, timeouts: np.ndarray) -> np.ndarray:
    """[K, N] bool: the transitions whose next observation is a row of `final_observations`
    (episode ends and each task's last transition)."""
    mask = np.asarray(terminals) | np.asarray(timeouts)
    if mask.shape[-1]:
        mask[..., -1] = True
    return mask


def final_slots(terminals: np.ndarray, timeouts: np.ndarray) -> np.ndarray:
    """int32 [K, N]: the row of `final_observations` holding transition t's next observation, -1
    where it is `observations[t + 1]`."""
    mask = final_mask(terminals, timeouts)
    return np.where(mask, np.cumsum(mask, -1, dtype=np.int32) - 1, -1).astype(np.int32)


def final_table(observations: np.ndarray, finals: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """`final_observations` of the first n = ends.shape[1] transitions: per task the rows of its
    episode ends (`ends` [K, n] = terminals | timeouts, whose next observations are the first rows of
    `finals`, in order), then `observations[n]` where transition n-1 ends no episode."""
    k, n = ends.shape
    counts = ends.sum(1)
    open_end = ~ends[:, n - 1]
    out = np.zeros((k, int((counts + open_end).max()), observations.shape[-1]), np.float32)
    for t in range(k):
        out[t, :counts[t]] = finals[t, :counts[t]]
        if open_end[t]:
            out[t, counts[t]] = observations[t, n]
    return out


@dataclass
class Dataset:
    """K tasks' transitions in the format above; `next_obs(task)` gives a task's next observations."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    final_observations: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    tasks: np.ndarray
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    @property
    def num_tasks(self) -> int:
        return self.observations.shape[0]

    @property
    def num_transitions(self) -> int:
        return self.observations.shape[1]

    def arrays(self) -> dict[str, np.ndarray]:
        out = {k: getattr(self, k) for k in _CORE}
        out["tasks"] = self.tasks
        out.update({f"extra_{k}": v for k, v in self.extras.items()})
        return out

    def final_slots(self) -> np.ndarray:
        """int32 [K, N]: see `final_slots`."""
        return final_slots(self.terminals, self.timeouts)

    def next_obs(self, task: int, idx: np.ndarray | None = None) -> np.ndarray:
        """Next observations of task `task`'s transitions `idx` (default: all), [len(idx), obs] float32."""
        n = self.num_transitions
        idx = np.arange(n) if idx is None else np.asarray(idx, np.int64)
        slot = final_slots(self.terminals[task], self.timeouts[task])[idx]
        out = np.asarray(self.observations[task][np.minimum(idx + 1, n - 1)], np.float32)
        out[slot >= 0] = self.final_observations[task][slot[slot >= 0]]
        return out

    def head(self, n: int) -> "Dataset":
        """The first n transitions of every task (the authors' `bcq_interactions` cut, spec §2)."""
        if n <= 0 or n >= self.num_transitions:
            return self
        cut = {k: getattr(self, k)[:, :n] for k in _CORE if k != "final_observations"}
        finals = final_table(self.observations, self.final_observations, self.terminals[:, :n] | self.timeouts[:, :n])
        return Dataset(**cut, final_observations=finals, tasks=self.tasks,
                       extras={k: v[:, :n] for k, v in self.extras.items()}, meta=dict(self.meta))

    @staticmethod
    def from_arrays(observations, actions, rewards, next_observations, terminals, timeouts, tasks,
                    extras: dict | None = None, meta: dict | None = None) -> "Dataset":
        """A dataset from stacked arrays [K, N, ...] with full next observations, which must be the
        following transition's observation wherever no episode ends (else a one-line MbmlError)."""
        obs = np.asarray(observations, np.float32)
        if np.shape(next_observations) != obs.shape:
            raise MbmlError(f"next_observations has shape {np.shape(next_observations)}, expected {obs.shape}")
        ds = Dataset(observations=obs, actions=np.asarray(actions, np.float32),
                     rewards=np.asarray(rewards, np.float32), final_observations=np.zeros((0, 0, 0), np.float32),
                     terminals=np.asarray(terminals, np.bool_), timeouts=np.asarray(timeouts, np.bool_),
                     tasks=np.asarray(tasks, np.float64),
                     extras={k: np.asarray(v, np.float32) for k, v in (extras or {}).items()}, meta=dict(meta or {}))
        return _with_next_observations(ds, next_observations)

    @staticmethod
    def from_tasks(per_task: list[dict[str, np.ndarray]], tasks: np.ndarray, meta: dict | None = None) -> "Dataset":
        """Stack per-task dicts of arrays (observations, actions, rewards, next_observations,
        terminals, timeouts, and extras by name) into one dataset, checking they agree."""
        if not per_task:
            raise MbmlError("no tasks given")
        first = per_task[0]
        for i, d in enumerate(per_task):
            for k in _GIVEN:
                if k not in d:
                    raise MbmlError(f"task {i}: missing array {k!r}")
            if np.shape(d["observations"])[-1] != np.shape(first["observations"])[-1]:
                raise MbmlError(f"observation sizes differ between tasks: task 0 has "
                                f"{np.shape(first['observations'])[-1]}, task {i} has {np.shape(d['observations'])[-1]}")
            if np.shape(d["actions"])[-1] != np.shape(first["actions"])[-1]:
                raise MbmlError(f"action sizes differ between tasks: task 0 has "
                                f"{np.shape(first['actions'])[-1]}, task {i} has {np.shape(d['actions'])[-1]}")
            if set(d) != set(first):
                raise MbmlError(f"task {i} has arrays {sorted(d)}, task 0 has {sorted(first)}")
            lengths = {k: len(v) for k, v in d.items()}
            if len(set(lengths.values())) != 1 or len(d["observations"]) != len(first["observations"]):
                raise MbmlError(f"tasks have different numbers of transitions (task 0: {len(first['observations'])}, "
                                f"task {i}: {lengths}); cut them to the same length")
            if np.shape(d["next_observations"]) != np.shape(d["observations"]):
                raise MbmlError(f"task {i}: next_observations has shape {np.shape(d['next_observations'])}, "
                                f"observations {np.shape(d['observations'])}")
        dtypes = {**_CORE, "next_observations": np.float32}
        arrays = {k: np.stack([np.asarray(d[k], dtypes[k]) for d in per_task])
                  for k in _GIVEN if k != "next_observations"}
        extras = {k: np.stack([np.asarray(d[k], np.float32) for d in per_task]) for k in first if k not in _GIVEN}
        ds = Dataset(**arrays, final_observations=np.zeros((0, 0, 0), np.float32), tasks=np.asarray(tasks, np.float64),
                     extras=extras, meta=dict(meta or {}))
        return _with_next_observations(ds, [d["next_observations"] for d in per_task])


def _with_next_observations(ds: Dataset, nexts, where: str = "", min_tasks: int = 1) -> Dataset:
    """Fill `ds.final_observations` from full next observations (`nexts[t]`: task t's [N, obs], in
    RAM or memory-mapped), validate, and check the other next observations are the following
    transitions' observations, bit for bit. `where` prefixes error messages."""
    _check_layout(ds)
    k, n, d = ds.observations.shape
    mask = final_mask(ds.terminals, ds.timeouts)
    rows = [np.asarray(nexts[t][np.flatnonzero(mask[t])], np.float32) for t in range(k)]
    ds.final_observations = np.zeros((k, max(len(r) for r in rows), d), np.float32)
    for t, r in enumerate(rows):
        ds.final_observations[t, :len(r)] = r
    validate(ds, min_tasks)
    for t in range(k):
        i = _first_mismatch(nexts[t][:n - 1], ds.observations[t, 1:], mask[t, :n - 1])
        if i >= 0:
            raise _not_following(where, t, i)
    return ds


def _first_mismatch(given, following, ends: np.ndarray) -> int:
    """The first row where next observations `given` [n, obs] differ, bit for bit, from the following
    observations `following` [n, obs] although `ends` [n] marks no episode end there; -1 if none.
    Compared _CHECK_BYTES at a time, so memory-mapped arrays are read a slice at a time."""
    step = max(1, _CHECK_BYTES // (4 * max(np.shape(given)[-1], 1)))
    for s in range(0, len(ends), step):
        e = min(s + step, len(ends))
        a = np.ascontiguousarray(given[s:e], np.float32).view(np.uint32)
        b = np.ascontiguousarray(following[s:e], np.float32).view(np.uint32)
        bad = (a != b).any(-1) & ~ends[s:e]
        if bad.any():
            return s + int(np.argmax(bad))
    return -1


def _not_following(where: str, task: int, i: int) -> MbmlError:
    return MbmlError(f"{where}next_observations of task {task} at transition {i} is not the observation of "
                     f"transition {i + 1}, yet no episode ends there; mark episode ends with `timeouts` "
                     "(next observations are derived from the following observations)")


def _check_layout(ds: Dataset, min_tasks: int = 1) -> None:
    """Shapes and flags of every array but `final_observations` agree. Raises a one-line MbmlError."""
    if ds.observations.ndim != 3:
        raise MbmlError(f"observations must have shape [tasks, transitions, obs_dim], got {ds.observations.shape}")
    k, n, _ = ds.observations.shape
    want = {"actions": (k, n, None), "rewards": (k, n), "terminals": (k, n), "timeouts": (k, n)}
    for name, shape in want.items():
        got = getattr(ds, name).shape
        if len(got) != len(shape) or any(s is not None and s != g for s, g in zip(shape, got)):
            raise MbmlError(f"{name} has shape {got}, expected {tuple('?' if s is None else s for s in shape)}")
    if ds.tasks.ndim != 2 or ds.tasks.shape[0] != k:
        raise MbmlError(f"tasks has shape {ds.tasks.shape}, expected ({k}, task_dim)")
    for name, arr in ds.extras.items():
        if arr.shape[:2] != (k, n):
            raise MbmlError(f"extra {name!r} has shape {arr.shape}, expected ({k}, {n}, ...)")
    for name in ("terminals", "timeouts"):
        if getattr(ds, name).dtype != np.bool_:
            raise MbmlError(f"{name} must be boolean, got {getattr(ds, name).dtype}")
    if k < min_tasks:
        raise MbmlError(f"the dataset has {k} task(s); multi-task batch RL needs at least {min_tasks}")
    if n == 0:
        raise MbmlError("the dataset has no transitions")


def validate(ds: Dataset, min_tasks: int = 1) -> None:
    """Shapes agree, values are finite, flags are boolean. Raises a one-line MbmlError."""
    _check_layout(ds, min_tasks)
    k, n, d = ds.observations.shape
    m = int(final_mask(ds.terminals, ds.timeouts).sum(1).max())
    if ds.final_observations.shape != (k, m, d):
        raise MbmlError(f"final_observations has shape {ds.final_observations.shape}, expected {(k, m, d)} "
                        "(a row per episode end and last transition of the task with the most)")
    for name in ("observations", "actions", "rewards", "final_observations", "tasks",
                 *[f"extra_{e}" for e in ds.extras]):
        arr = ds.extras[name[6:]] if name.startswith("extra_") else getattr(ds, name)
        for t in range(k):  # per task, so memory-mapped arrays are checked a slice at a time
            bad = ~np.isfinite(arr[t])
            if bad.any():
                raise MbmlError(f"{name} of task {t} holds {int(bad.sum())} NaN or infinite value(s)")


def save(ds: Dataset, path: Path) -> None:
    """Write `ds` as a dataset folder (format version 2), atomically (the folder appears only once complete)."""
    validate(ds)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clear_stale_staging(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=staging_prefix(path)))
    try:
        for name, arr in ds.arrays().items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(arr), allow_pickle=False)
        write_json(tmp / "meta.json", _description(ds))
        replace_dir(tmp, path)
    except BaseException:  # a full disk or an interrupt: leave no half-written staging folder
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _description(ds: Dataset) -> dict:
    """The dataset folder's meta.json."""
    k, n, d = ds.observations.shape
    return {"format": FORMAT, "version": VERSION, "num_tasks": k, "num_transitions": n,
            "obs_dim": d, "act_dim": ds.actions.shape[-1],
            "arrays": {name: {"shape": list(a.shape), "dtype": str(a.dtype)} for name, a in ds.arrays().items()},
            "meta": ds.meta}


def _assemble(arrays: dict[str, np.ndarray], tasks: np.ndarray, meta: dict) -> Dataset:
    """A Dataset of the arrays named as in a dataset folder (`extra_<name>` for extras)."""
    return Dataset(**{k: arrays[k] for k in _CORE}, tasks=tasks,
                   extras={k[6:]: v for k, v in arrays.items() if k.startswith("extra_")}, meta=meta)


def load(path: Path, mmap: bool = True, min_tasks: int = 1) -> Dataset:
    """Read and validate a dataset folder; arrays are memory-mapped unless mmap=False.

    Version 1 folders are converted in memory: only the end rows of their `next_observations.npy`
    are kept (read through a memory map whatever `mmap` says), after checking the rest."""
    path = Path(path)
    restore_replaced(path)
    if not (path / "meta.json").exists():
        raise MbmlError(f"{path} is not an mbml dataset (no meta.json)")
    meta = read_json(path / "meta.json")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise MbmlError(f"{path}/meta.json is not an mbml dataset description")
    version = meta.get("version")
    if type(version) is not int or version not in READS:
        raise MbmlError(f"{path}: dataset format version {version!r} is not supported "
                        f"(this mbml reads {' and '.join(map(str, READS))})")
    specs = meta.get("arrays")
    if not isinstance(specs, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("shape"), list) and isinstance(v.get("dtype"), str)
            for v in specs.values()):
        raise MbmlError(f"{path}/meta.json: 'arrays' must map names to {{shape, dtype}}")
    next_name = "next_observations" if version == 1 else "final_observations"
    arrays = {}
    for name, spec in specs.items():
        f = path / f"{name}.npy"
        try:
            arr = np.load(f, mmap_mode="r" if mmap or name == "next_observations" else None, allow_pickle=False)
        except FileNotFoundError:
            raise MbmlError(f"dataset file {f} is missing") from None
        except Exception as e:  # a damaged header or body: ValueError, EOFError, tokenize's TokenError...
            raise MbmlError(f"dataset file {f} is truncated or corrupt ({one_line(e)})") from None
        if list(arr.shape) != spec["shape"] or str(arr.dtype) != spec["dtype"]:
            raise MbmlError(f"dataset file {f} has shape {list(arr.shape)} {arr.dtype}, "
                            f"meta.json says {spec['shape']} {spec['dtype']}")
        want = _DTYPES.get(name, np.float32 if name.startswith("extra_") else None)
        if want is not None and arr.dtype != want:
            raise MbmlError(f"dataset file {f} holds {arr.dtype}; the format stores {np.dtype(want)}")
        arrays[name] = arr
    if not isinstance(meta.get("meta", {}), dict):
        raise MbmlError(f"{path}/meta.json: 'meta' must be a table, got {meta['meta']!r:.40}")
    missing = [k for k in (*_CORE, "tasks") if k not in arrays and k != "final_observations"]
    missing += [next_name] if next_name not in arrays else []
    if missing:
        raise MbmlError(f"dataset {path} lacks arrays: {', '.join(missing)}")
    extras = {k[6:]: v for k, v in arrays.items() if k.startswith("extra_")}
    core = {k: arrays[k] for k in _CORE if k != "final_observations"}
    if version == 1:
        nxt = arrays["next_observations"]
        if nxt.shape != core["observations"].shape or nxt.dtype != np.float32:
            raise MbmlError(f"dataset file {path / 'next_observations.npy'} has shape {list(nxt.shape)} {nxt.dtype}, "
                            f"expected {list(core['observations'].shape)} float32")
        ds = Dataset(**core, final_observations=np.zeros((0, 0, 0), np.float32), tasks=np.asarray(arrays["tasks"]),
                     extras=extras, meta=meta.get("meta", {}))
        ds = _with_next_observations(ds, nxt, f"{path}: ", min_tasks)
    else:
        ds = Dataset(**core, final_observations=arrays["final_observations"], tasks=np.asarray(arrays["tasks"]),
                     extras=extras, meta=meta.get("meta", {}))
        validate(ds, min_tasks=min_tasks)
    sizes = {"num_tasks": ds.num_tasks, "num_transitions": ds.num_transitions,
             "obs_dim": ds.observations.shape[-1], "act_dim": ds.actions.shape[-1]}
    for key, size in sizes.items():  # `_description` writes them; a reader of meta.json alone trusts them
        if key in meta and not (type(meta[key]) is int and meta[key] == size):
            raise MbmlError(f"{path}/meta.json says {key} {meta[key]!r:.20}, the arrays hold {size}")
    return ds


def read_meta(path: Path) -> dict:
    """The free-form meta of the dataset folder at `path` (family, seed, source) from its meta.json
    alone, reading no array; {} if it has none."""
    description = read_json(Path(path) / "meta.json")
    meta = description.get("meta") if isinstance(description, dict) else None
    return meta if isinstance(meta, dict) else {}
