"""`DatasetWriter`: a dataset folder (format version 2, see `mbml.data`) written a piece at a time."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from mbml.data import _CORE, Dataset, _assemble, _check_layout, _description, _first_mismatch, _not_following
from mbml.errors import MbmlError
from mbml.io import clear_stale_staging, replace_dir, staging_prefix, write_json

__all__ = ["DatasetWriter"]


class DatasetWriter:
    """Writes a dataset folder (format version 2) a piece at a time, never holding it in memory.

    Every array is a `.npy` file memory-mapped (`np.lib.format.open_memmap`) in a hidden staging
    folder next to `path`. `append(task, ...)` adds transitions to the end of a task's, given as
    `Dataset.from_tasks` takes them (next observations in full), and checks them as `from_tasks` and
    `validate` do, a piece at a time: shapes, finite values, and next observations that are the
    following observations wherever no episode ends (their rows go to `final_observations`).
    `close()` checks that every task is complete, moves the folder into place atomically (as `save`
    does) and returns the dataset, memory-mapped. Used as a context manager, it closes on success and
    on any error removes the staging folder, leaving an existing `path` as it was.

    `num_finals` is M of the module docstring: the most episode ends (the last transition counts) of
    any task. `extras` maps each extra's name to its per-step shape.
    """

    def __init__(self, path: Path, tasks: np.ndarray, num_transitions: int, num_finals: int, obs_dim: int,
                 act_dim: int, extras: dict[str, tuple[int, ...]] | None = None, meta: dict | None = None,
                 min_tasks: int = 1):
        tasks = np.asarray(tasks, np.float64)
        k, n, m = len(tasks) if tasks.ndim else 0, int(num_transitions), int(num_finals)
        shapes = {"observations": (k, n, obs_dim), "actions": (k, n, act_dim), "rewards": (k, n),
                  "final_observations": (k, m, obs_dim), "terminals": (k, n), "timeouts": (k, n),
                  **{f"extra_{e}": (k, n, *shape) for e, shape in (extras or {}).items()}}
        dtypes = {name: _CORE.get(name, np.float32) for name in shapes}
        # checked before anything is written, on arrays of the final shapes that take no memory
        _check_layout(_assemble({name: np.broadcast_to(np.zeros((), dtypes[name]), shape)
                                 for name, shape in shapes.items()}, tasks, {}), min_tasks)
        if not 1 <= m <= n:
            raise MbmlError(f"num_finals is {m}; each task has 1 to {n} episode ends (its last transition counts)")
        self.path, self._tasks, self._meta = Path(path), tasks, dict(meta or {})
        self._filled, self._finals, self._pending = [0] * k, [0] * k, [None] * k
        self._result: Dataset | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        clear_stale_staging(self.path)
        self._tmp = Path(tempfile.mkdtemp(dir=self.path.parent, prefix=staging_prefix(self.path)))
        self._arrays: dict[str, np.ndarray] = {}
        try:
            for name, shape in shapes.items():
                self._arrays[name] = np.lib.format.open_memmap(self._tmp / f"{name}.npy", "w+", dtypes[name], shape)
        except BaseException:
            self.abort()
            raise

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None and self._arrays:
            self.close()
        else:
            self.abort()

    def append(self, task: int, observations, actions, rewards, next_observations, terminals, timeouts,
               **extras) -> None:
        """Add T transitions (arrays [T, ...], T may be 0) after those task `task` already has."""
        self._check_open()
        k, n, _ = self._arrays["observations"].shape
        if not 0 <= task < k:
            raise MbmlError(f"task {task} does not exist; the dataset has {k} tasks")
        given = {"observations": observations, "actions": actions, "rewards": rewards, "terminals": terminals,
                 "timeouts": timeouts, **{f"extra_{e}": v for e, v in extras.items()}}
        if set(given) != set(self._arrays) - {"final_observations"}:
            want = sorted(name[6:] for name in self._arrays if name.startswith("extra_"))
            raise MbmlError(f"task {task}: extras {sorted(extras)} given, the dataset has {want}")
        given = {name: np.asarray(v, self._arrays[name].dtype) for name, v in given.items()}
        given["next_observations"] = np.asarray(next_observations, np.float32)
        start, steps = self._filled[task], np.shape(given["rewards"])[0] if np.ndim(given["rewards"]) else 0
        if start + steps > n:
            raise MbmlError(f"task {task} would have {start + steps} transitions; the dataset has {n}")
        for name, arr in given.items():
            want = (steps, *self._arrays[name if name != "next_observations" else "observations"].shape[2:])
            if arr.shape != want:
                raise MbmlError(f"task {task}: {name} has shape {arr.shape}, expected {want}")
        if not steps:
            return
        nxt, obs = given.pop("next_observations"), given["observations"]
        ends = given["terminals"] | given["timeouts"]
        ends[-1] |= start + steps == n
        finals = nxt[ends]
        for name, arr in (*given.items(), ("next_observations", finals)):
            bad = 0 if arr.dtype == np.bool_ else int((~np.isfinite(arr)).sum())
            if bad:
                raise MbmlError(f"{name} of task {task} holds {bad} NaN or infinite value(s) "
                                f"in transitions {start} to {start + steps - 1}")
        pending = self._pending[task]
        if pending is not None and _first_mismatch(pending[None], obs[:1], np.zeros(1, bool)) >= 0:
            raise _not_following("", task, start - 1)
        i = _first_mismatch(nxt[:-1], obs[1:], ends[:-1])
        if i >= 0:
            raise _not_following("", task, start + i)
        r, m = self._finals[task], self._arrays["final_observations"].shape[1]
        if r + len(finals) > m:
            raise MbmlError(f"task {task} has more than num_finals={m} episode ends (its last transition counts)")
        for name, arr in given.items():
            self._arrays[name][task, start:start + steps] = arr
        self._arrays["final_observations"][task, r:r + len(finals)] = finals
        self._filled[task], self._finals[task] = start + steps, r + len(finals)
        self._pending[task] = None if ends[-1] else nxt[-1].copy()

    def close(self) -> Dataset:
        """Check every task is complete, publish the folder at `path`; the dataset, memory-mapped."""
        if self._result is not None:
            return self._result
        self._check_open()
        try:
            n, m = self._arrays["rewards"].shape[1], self._arrays["final_observations"].shape[1]
            for t, filled in enumerate(self._filled):
                if filled != n:
                    raise MbmlError(f"task {t} has {filled} of the dataset's {n} transitions")
            if max(self._finals) != m:
                raise MbmlError(f"num_finals is {m}, but the task with the most episode ends (its last "
                                f"transition counts) has {max(self._finals)}")
            for arr in self._arrays.values():
                arr.flush()
            np.save(self._tmp / "tasks.npy", self._tasks, allow_pickle=False)
            write_json(self._tmp / "meta.json", _description(_assemble(self._arrays, self._tasks, self._meta)))
            names, self._arrays = list(self._arrays), {}
            replace_dir(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        arrays = {name: np.load(self.path / f"{name}.npy", mmap_mode="r", allow_pickle=False) for name in names}
        self._result = _assemble(arrays, np.load(self.path / "tasks.npy"), self._meta)
        return self._result

    def abort(self) -> None:
        """Remove the staging folder, unless closed: nothing is written to `path`."""
        self._arrays = {}
        if self._result is None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def _check_open(self) -> None:
        if not self._arrays:
            raise MbmlError(f"the dataset writer for {self.path} is closed")
