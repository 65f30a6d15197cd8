"""The multi-task dataset format (version 1).

A dataset is a folder holding one `.npy` file per array, each with a leading task axis, and
`meta.json`:

| array               | shape        | dtype   | meaning                                              |
|---------------------|--------------|---------|------------------------------------------------------|
| observations        | [K, N, obs]  | float32 | s_t                                                  |
| actions             | [K, N, act]  | float32 | a_t in [-1, 1]                                       |
| rewards             | [K, N]       | float32 | r_t                                                  |
| next_observations   | [K, N, obs]  | float32 | s_{t+1} (the true next state, also at episode ends)  |
| terminals           | [K, N]       | bool    | the environment terminated (no bootstrapping)        |
| timeouts            | [K, N]       | bool    | the episode was cut by its time limit (bootstrap)    |
| tasks               | [K, P]       | float64 | each task's parameters                               |
| extra_<name>        | [K, N, ...]  | float32 | per-step quantities a family's true reward needs     |

Transitions are in collection order (each task's batch is its agent's learning history); an
episode ends where `terminals | timeouts`. Arrays load memory-mapped (nothing is read twice into
RAM), files are never unpickled, and everything is validated on load.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mbml.errors import MbmlError
from mbml.io import read_json, replace_dir, write_json

FORMAT, VERSION = "mbml-dataset", 1
_CORE = {"observations": np.float32, "actions": np.float32, "rewards": np.float32,
         "next_observations": np.float32, "terminals": np.bool_, "timeouts": np.bool_}


@dataclass
class Dataset:
    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
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

    def head(self, n: int) -> "Dataset":
        """The first n transitions of every task (the authors' `bcq_interactions` cut, spec §2)."""
        if n <= 0 or n >= self.num_transitions:
            return self
        cut = {k: getattr(self, k)[:, :n] for k in _CORE}
        return Dataset(**cut, tasks=self.tasks, extras={k: v[:, :n] for k, v in self.extras.items()},
                       meta=dict(self.meta))

    @staticmethod
    def from_tasks(per_task: list[dict[str, np.ndarray]], tasks: np.ndarray, meta: dict | None = None) -> "Dataset":
        """Stack per-task dicts of arrays (same keys as the format) into one dataset, checking they agree."""
        if not per_task:
            raise MbmlError("no tasks given")
        first = per_task[0]
        for i, d in enumerate(per_task):
            for k in _CORE:
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
        arrays = {k: np.stack([np.asarray(d[k], _CORE[k]) for d in per_task]) for k in _CORE}
        extra_keys = [k for k in first if k not in _CORE]
        extras = {k: np.stack([np.asarray(d[k], np.float32) for d in per_task]) for k in extra_keys}
        ds = Dataset(**arrays, tasks=np.asarray(tasks, np.float64), extras=extras, meta=dict(meta or {}))
        validate(ds)
        return ds


def validate(ds: Dataset, min_tasks: int = 1) -> None:
    """Shapes agree, values are finite, flags are boolean. Raises a one-line MbmlError."""
    if ds.observations.ndim != 3:
        raise MbmlError(f"observations must have shape [tasks, transitions, obs_dim], got {ds.observations.shape}")
    k, n, d = ds.observations.shape
    want = {"actions": (k, n, None), "rewards": (k, n), "next_observations": (k, n, d),
            "terminals": (k, n), "timeouts": (k, n)}
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
    for name in ("observations", "actions", "rewards", "next_observations", *[f"extra_{e}" for e in ds.extras]):
        arr = ds.extras[name[6:]] if name.startswith("extra_") else getattr(ds, name)
        for t in range(k):  # per task, so memory-mapped arrays are checked a slice at a time
            bad = ~np.isfinite(arr[t])
            if bad.any():
                raise MbmlError(f"{name} of task {t} holds {int(bad.sum())} NaN or infinite value(s)")


def save(ds: Dataset, path: Path) -> None:
    """Write `ds` as a dataset folder, atomically (the folder appears only once complete)."""
    validate(ds)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    arrays = ds.arrays()
    for name, arr in arrays.items():
        np.save(tmp / f"{name}.npy", np.ascontiguousarray(arr), allow_pickle=False)
    k, n, d = ds.observations.shape
    meta = {"format": FORMAT, "version": VERSION, "num_tasks": k, "num_transitions": n,
            "obs_dim": d, "act_dim": ds.actions.shape[-1],
            "arrays": {name: {"shape": list(a.shape), "dtype": str(a.dtype)} for name, a in arrays.items()},
            "meta": ds.meta}
    write_json(tmp / "meta.json", meta)
    replace_dir(tmp, path)


def load(path: Path, mmap: bool = True, min_tasks: int = 1) -> Dataset:
    """Read and validate a dataset folder; arrays are memory-mapped unless mmap=False."""
    path = Path(path)
    if not (path / "meta.json").exists():
        raise MbmlError(f"{path} is not an mbml dataset (no meta.json)")
    meta = read_json(path / "meta.json")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise MbmlError(f"{path}/meta.json is not an mbml dataset description")
    if meta.get("version") != VERSION:
        raise MbmlError(f"{path}: dataset format version {meta.get('version')} is not supported (this mbml reads {VERSION})")
    specs = meta.get("arrays")
    if not isinstance(specs, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("shape"), list) and isinstance(v.get("dtype"), str)
            for v in specs.values()):
        raise MbmlError(f"{path}/meta.json: 'arrays' must map names to {{shape, dtype}}")
    arrays = {}
    for name, spec in specs.items():
        f = path / f"{name}.npy"
        try:
            arr = np.load(f, mmap_mode="r" if mmap else None, allow_pickle=False)
        except FileNotFoundError:
            raise MbmlError(f"dataset file {f} is missing") from None
        except (ValueError, OSError, EOFError) as e:
            raise MbmlError(f"dataset file {f} is truncated or corrupt ({e})") from None
        if list(arr.shape) != spec["shape"] or str(arr.dtype) != spec["dtype"]:
            raise MbmlError(f"dataset file {f} has shape {list(arr.shape)} {arr.dtype}, "
                            f"meta.json says {spec['shape']} {spec['dtype']}")
        arrays[name] = arr
    missing = [k for k in (*_CORE, "tasks") if k not in arrays]
    if missing:
        raise MbmlError(f"dataset {path} lacks arrays: {', '.join(missing)}")
    extras = {k[6:]: v for k, v in arrays.items() if k.startswith("extra_")}
    ds = Dataset(**{k: arrays[k] for k in _CORE}, tasks=np.asarray(arrays["tasks"]), extras=extras,
                 meta=meta.get("meta", {}))
    validate(ds, min_tasks=min_tasks)
    return ds
