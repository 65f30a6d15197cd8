"""Minari export of multi-task datasets: one Minari dataset `PREFIX/taskII-v0` per task (the layout is
described in `mbml.minari_io`, which imports them back)."""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from mbml import data as D
from mbml.errors import MbmlError
from mbml.io import replace_dir
from mbml.minari_io import _minari, _root


def export_ids(prefix: str, num_tasks: int) -> list[str]:
    """The Minari ids of a K-task export under `prefix`, checked against Minari's id syntax."""
    from minari.dataset.minari_dataset import parse_dataset_id

    width = max(2, len(str(num_tasks - 1)))
    ids = [f"{prefix}/task{i:0{width}d}-v0" for i in range(num_tasks)]
    try:
        parse_dataset_id(ids[0])
    except ValueError:
        raise MbmlError(f"prefix {prefix!r} is not a Minari namespace (letters, digits, -, _ and /)") from None
    return ids


# ----------------------------------------------------------------------------------------- export


def _pieces(ds: D.Dataset, task: int) -> list[tuple[int, int, int]]:
    """(start, stop, row) of task `task`'s Minari episodes: cut at episode ends and after the last
    transition; `row` is the episode's last next state in `final_observations`."""
    stops = np.flatnonzero(D.final_mask(ds.terminals[task], ds.timeouts[task])) + 1
    return list(zip([0, *stops[:-1]], stops, range(len(stops))))


def _episode(ds: D.Dataset, task: int, start: int, stop: int, row: int):
    from minari.data_collector import EpisodeBuffer

    obs = np.concatenate([ds.observations[task, start:stop], ds.final_observations[task, row:row + 1]])
    infos = None
    if ds.extras:
        infos = {}
        for name, arr in ds.extras.items():
            rows = np.asarray(arr[task, start:stop], np.float32)
            infos[name] = np.concatenate([np.full_like(rows[:1], np.nan), rows])
    return EpisodeBuffer(observations=obs, actions=np.asarray(ds.actions[task, start:stop]),
                         rewards=np.asarray(ds.rewards[task, start:stop]),
                         terminations=np.asarray(ds.terminals[task, start:stop]),
                         truncations=np.asarray(ds.timeouts[task, start:stop]), infos=infos)


def _write_task(minari, ds: D.Dataset, task: int, dataset_id: str) -> None:
    """Create task `task`'s Minari dataset (in the root MINARI_DATASETS_PATH points at)."""
    import gymnasium as gym

    family = ds.meta.get("family")
    params = ds.tasks[task].tolist()
    with warnings.catch_warnings():  # author, e-mail, permalink and eval env are optional; don't nag
        warnings.simplefilter("ignore", UserWarning)
        out = minari.create_dataset_from_buffers(
            dataset_id, [],
            observation_space=gym.spaces.Box(-np.inf, np.inf, ds.observations.shape[-1:], np.float32),
            action_space=gym.spaces.Box(-1.0, 1.0, ds.actions.shape[-1:], np.float32),
            algorithm_name=str(ds.meta.get("source", "mbml")),
            description=f"mbml multi-task dataset, family {family}, task {task} of {ds.num_tasks}, "
                        f"task parameters {params}")
        # the storage takes any iterable, so a task's episodes are built one at a time, not listed
        out.storage.update_episodes(_episode(ds, task, *piece) for piece in _pieces(ds, task))
    out.storage.update_metadata({"mbml": {
        "format": D.FORMAT, "version": D.VERSION, "family": family, "task_index": task,
        "num_tasks": ds.num_tasks, "task": params, "extras": list(ds.extras), "meta": ds.meta}})


def export_minari(data_dir: Path, dataset_id_prefix: str, root: Path | None = None, force: bool = False) -> list[str]:
    """Write the mbml dataset in `data_dir` as one Minari dataset per task; returns their ids.

    All datasets are written to a hidden staging folder in the Minari root first and moved into
    place only once every one is complete. Existing datasets with the same ids are refused unless
    `force`, which replaces them.
    """
    minari = _minari()
    ds = D.load(data_dir, min_tasks=2)
    ids = export_ids(dataset_id_prefix, ds.num_tasks)
    with _root(root) as final:
        taken = [i for i in ids if (final / i).exists()]
        if taken and not force:
            raise MbmlError(f"Minari dataset {taken[0]} already exists in {final}; use another prefix or --force")
        staging = Path(tempfile.mkdtemp(dir=final, prefix=".mbml-export-"))  # hidden: Minari skips it
        try:
            with _root(staging):
                for task, dataset_id in enumerate(ids):
                    _write_task(minari, ds, task, dataset_id)
            _publish(staging, final, ids)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return ids


def _publish(staging: Path, final: Path, ids: list[str]) -> None:
    """Move the staged datasets into the root, creating their namespace there if it is new."""
    from minari.dataset.minari_dataset import parse_dataset_id
    from minari.namespace import create_namespace, list_local_namespaces

    namespace = parse_dataset_id(ids[0])[0]
    if namespace not in list_local_namespaces():
        create_namespace(namespace, description="mbml multi-task dataset, one Minari dataset per task")
    for dataset_id in ids:
        replace_dir(staging / dataset_id, final / dataset_id)


# ----------------------------------------------------------------------------------------- import
