"""The run folder: its config, paths, PRNG keys and bookkeeping (`mbml.pipeline` runs the stages in it).

Each stage reads its inputs from the run folder, writes its outputs atomically (the file that marks
it done last), and is skipped when already done unless forced. Long stages checkpoint between
chunks, so a killed run continues where it stopped.

    OUT/config.json                 resolved config (a rerun with a different one is refused)
    OUT/run.json                    versions, seeds and methods asked for
    OUT/seed_S/data/                the K-task dataset (mbml.data format)
    OUT/seed_S/teachers.msgpack     BCQ teachers, best evaluated checkpoint  (+ teachers.json)
    OUT/seed_S/ensembles.msgpack    reward ensembles                        (+ relabel.npz, relabel.json)
    OUT/seed_S/next_state_ensembles.msgpack   next-state ensembles, where tasks differ in dynamics
    OUT/seed_S/students/M.msgpack   method M's trained agent (student or baseline)  (+ M.csv learning curve)
    OUT/seed_S/eval/M.json          evaluation protocol on train, test (and ood) tasks, diagnostic
    OUT/seed_S/timings.json         seconds per stage
    OUT/results.json, report.md, figures/
"""

from __future__ import annotations

import csv
import hashlib
import json
import platform
import resource
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import jax
import numpy as np

import mbml
from mbml import config as C, data as D, io, methods as M
from mbml.config import RunConfig
from mbml.errors import MbmlError
from mbml.families import Family, data_family, get_family
from mbml.status import read_record
from mbml.steps import HEARTBEAT, Progress, done_marker, seed_steps, stage_key, stage_steps  # noqa: F401
from mbml.train_loop import progress_file, remove_checkpoint

_RUNNING: set[Callable[[], None]] = set()
"""The heartbeat writers of the stages running in this process (`Run.timed`)."""


def save_running_stages() -> None:
    """Write every running stage's time so far now (the CLI's interrupt watcher, before it ends the
    process while the main thread is stuck in a long jitted chunk)."""
    for save in list(_RUNNING):
        try:
            save()
        except Exception:  # noqa: BLE001 (best effort on the way out; a heartbeat at most 30 s old is kept)
            pass


def versions() -> dict:
    import flax
    import optax

    return {"mbml": mbml.__version__, "python": platform.python_version(), "jax": jax.__version__,
            "flax": flax.__version__, "optax": optax.__version__, "numpy": np.__version__,
            "platform": platform.platform(), "device": str(jax.devices()[0])}


def _read_config(saved: Path) -> RunConfig:
    """A run folder's config. Fields added to a section since it was made take their defaults;
    sections added since (a new method's) take the folder's preset's values (with its --set changes),
    so that an old folder resumes and gains the new methods (`save_config` then records them)."""
    raw = io.read_json(saved)
    missing = [name for name in C.SECTIONS if name not in raw]
    old = C.read(saved)
    if missing and old.preset in C.PRESETS:
        now = C.to_dict(C.override(C.preset(old.family, old.preset), old.overrides))
        old = C.from_dict({**C.to_dict(old), **{name: now[name] for name in missing}}, str(saved))
    return old


def _first_difference(a, b, prefix=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            d = _first_difference(a.get(k), b.get(k), f"{prefix}{k}.")
            if d:
                return d
        return None
    norm = lambda x: list(x) if isinstance(x, tuple) else x  # noqa: E731
    return None if norm(a) == norm(b) else f"{prefix[:-1]} ({b!r} in the folder, {a!r} now)"



@dataclass
class RunFolder:
    """A run folder bound to its config."""

    out: Path
    cfg: RunConfig
    family: Family
    progress: Progress | None = None
    live: tuple[str, int, int] | None = field(default=None, repr=False)
    """(part, done, total) last reported by this process's stage in progress, for its heartbeat."""
    loaded: tuple[int, D.Dataset] | None = field(default=None, repr=False)
    """(seed, dataset) last loaded and checked by `dataset`, memory-mapped: one seed's at a time, so that
    no other seed's pages stay mapped while a seed's stages run."""

    @classmethod
    def open(cls, out: Path, cfg: RunConfig | None = None, progress: Progress | None = None, create: bool = True) -> "RunFolder":
        """Open (or create) a run folder; refuses a folder made with a different config. `create=False`
        writes nothing yet (`save_config` does, once the command has checked its inputs)."""
        out = Path(out)
        saved = out / "config.json"
        if saved.exists():
            old = _read_config(saved)
            if cfg is None:
                cfg = old
            else:
                if cfg.lift == "auto":  # auto: no choice made, so the folder's own choice stands
                    cfg = replace(cfg, lift=old.lift)
                diff = _first_difference(C.to_dict(cfg), C.to_dict(old))
                if diff:
                    made = f"; it was made with --set {' '.join(old.overrides)}" if old.overrides != cfg.overrides else ""
                    raise MbmlError(f"{out} was made with a different config: {diff}{made}; "
                                    "use another --out (nothing was changed)")
        elif cfg is None:
            raise MbmlError(f"{out} is not a run folder (no config.json); start it with `mbml run`")
        family = get_family(cfg.family) if cfg.family is not None else family_of_data(out)
        if out.exists() and not out.is_dir():
            raise MbmlError(f"{out} exists and is not a folder")
        run = cls(out, cfg, family, progress)
        if create:
            run.save_config()
        return run

    def save_config(self) -> None:
        """Write config.json: in a new run folder, or where the folder's lacks what this version added
        (sections and fields, as `open` filled them in)."""
        path = self.out / "config.json"
        now = json.loads(json.dumps(C.to_dict(self.cfg)))
        if not path.exists() or io.read_json(path) != now:
            io.write_json(path, now)

    def require(self, seed: int, name: str) -> None:
        """A one-line MbmlError naming the command that makes step `name`'s output, unless it exists."""
        step = next(s for s in seed_steps(list(M.REGISTRY), ensembles=True, teachers=True) if s.name == name)
        if not (self.seed_dir(seed) / step.marker).exists():
            which = f" --methods {step.method}" if step.method else ""
            raise MbmlError(f"no {step.output} in {self.seed_dir(seed)}; run `mbml {step.stage} --out {self.out}"
                            f"{which}` first")

    def check_family_gives(self, method: str) -> None:
        if method in C.METHODS and C.METHODS[method].relabel == "true" and self.family.true_reward is None:
            raise MbmlError(f"{method} needs the true reward, which family {self.family.name} does not give")

    def check_inputs(self, seeds, methods, stages, force: bool = False) -> None:
        """Before a command writes anything: every step that `stages` run for `seeds` (all but those done,
        unless forced) finds what it reads, made by an earlier step of the same command or on disk (the
        dataset loaded, validated and checked against the batch sizes); else the one-line error of the
        first input missing."""
        read_record(self.out)  # `record` adds to it
        for seed in seeds:
            made = set()  # the steps of this command so far
            for step in stage_steps(methods, stages):
                if not force and (self.seed_dir(seed) / step.marker).exists():
                    continue  # done: skipped, reads nothing
                for need in (n for n in step.needs if n not in made):
                    if need == "collect":
                        self.dataset(seed)
                    else:
                        self.require(seed, need)
                if step.method is not None:
                    self.check_family_gives(step.method)
                made.add(step.name)
            if "collect" in made:  # the collectors' whole history becomes the dataset
                C.check_batches(self.cfg, self.cfg.sac.total_steps, "the dataset to collect (sac.total_steps)")
            if "report" in stages:
                for name in (*(f"evaluate_{m}" for m in methods), "references"):
                    if name not in made:
                        self.require(seed, name)

    def seed_dir(self, seed: int) -> Path:
        return self.out / f"seed_{seed}"

    def key(self, seed: int, stage: str):
        """The seed's PRNG key of a stage or step, from its name (`steps.stage_key`)."""
        return jax.random.fold_in(jax.random.PRNGKey(seed), stage_key(stage))

    def bar(self, label: str):
        """The progress callback of a stage: shown by `progress` (if any) and kept for the heartbeat."""
        part = label.split(" ", 2)[-1] if label.startswith("seed ") else label  # "seed 0 next-state ensembles"

        def report(done: int, total: int):
            self.live = (part, int(done), int(total))
            if self.progress is not None:
                self.progress(label, done, total)
        return report

    HEARTBEAT = HEARTBEAT
    """Seconds between heartbeats of this run's stages (`mbml status` assumes `steps.HEARTBEAT`)."""

    @contextmanager
    def timed(self, seed: int, stage: str):
        """Add the stage's wall time to `timings.json`, counting earlier interrupted attempts: while
        it runs, its time so far is written every `HEARTBEAT` seconds to `ckpt/<stage>.seconds.json`,
        which a resumed attempt starts from (SIGKILL loses at most one heartbeat; an error, Ctrl-C or
        SIGTERM nothing), with the steps done so far (the last `bar` report) for `mbml status`."""
        sidecar = self.seed_dir(seed) / "ckpt" / f"{stage}.seconds.json"
        before = float(io.read_json(sidecar)["seconds"]) if sidecar.exists() else 0.0
        t0 = time.perf_counter()
        stop = threading.Event()
        self.live = None
        lock, closed = threading.Lock(), threading.Event()  # closed: the stage's time is final

        def save():
            with lock:
                if closed.is_set():  # the interrupt watcher, racing the stage's end: write nothing
                    return
                sidecar.parent.mkdir(parents=True, exist_ok=True)
                live = self.live
                io.write_json(sidecar, {"seconds": before + time.perf_counter() - t0,
                                        **({"part": live[0], "done": live[1], "total": live[2]} if live else {})})

        def beat():
            while not stop.wait(self.HEARTBEAT):
                save()

        save()  # at once: `mbml status` reads a stage without a fresh heartbeat as stopped
        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
        _RUNNING.add(save)
        try:
            yield
        except BaseException:  # an error or an interrupt (Ctrl-C, SIGTERM): keep the time to the second
            _RUNNING.discard(save)
            stop.set()
            thread.join()
            save()
            closed.set()
            raise
        _RUNNING.discard(save)
        stop.set()
        thread.join()
        with lock:
            closed.set()
        took = before + time.perf_counter() - t0
        io.update_json(self.seed_dir(seed) / "timings.json", lambda t: {**t, stage: t.get(stage, 0.0) + took})
        sidecar.unlink(missing_ok=True)
        # the peak over the processes that ran this seed's stages
        io.update_json(self.seed_dir(seed) / "memory.json",
                       lambda m: {"peak_rss_mb": max(m.get("peak_rss_mb", 0.0), peak_rss_mb())})

    def record(self, seeds, methods) -> None:
        path = self.out / "run.json"
        old = read_record(self.out)
        io.write_json(path, {"family": self.cfg.family, "preset": self.cfg.preset,
                             "seeds": sorted(set(old.get("seeds", [])) | set(seeds)),
                             "methods": list(dict.fromkeys([*old.get("methods", []), *methods])),
                             "versions": versions()})

    def _done(self, seed: int, marker: Path, force: bool, *ckpts: str) -> bool:
        """Whether a stage is finished (its `marker` exists) and not forced. A finished stage's
        checkpoints (with what belongs to them) and heartbeat are removed: a kill between writing the
        outputs and removing them leaves them. A heartbeat left before the stage's time reached
        `timings.json` is its only record of that time and is moved there."""
        if force or not marker.exists():
            return False
        timings_path = self.seed_dir(seed) / "timings.json"
        for name in ckpts:
            ckpt = self.seed_dir(seed) / "ckpt" / f"{name}.msgpack"
            remove_checkpoint(ckpt)
            beat = ckpt.with_name(f"{name}.seconds.json")
            if beat.exists():
                seconds = io.read_json(beat)["seconds"]
                io.update_json(timings_path, lambda t: t if name in t else {**t, name: seconds})
                beat.unlink()
        return True

    def dataset(self, seed: int) -> D.Dataset:
        """The seed's dataset, validated, of the family's sizes and no smaller than the batches drawn from it."""
        if self.loaded is not None and self.loaded[0] == seed:
            return self.loaded[1]
        self.require(seed, "collect")
        path = self.seed_dir(seed) / "data"
        ds = D.load(path, min_tasks=2)
        if ds.observations.shape[-1] != self.family.obs_dim or ds.actions.shape[-1] != self.family.act_dim:
            raise MbmlError(f"dataset in {path} has obs/action sizes {ds.observations.shape[-1]}/"
                            f"{ds.actions.shape[-1]}, family {self.family.name} has "
                            f"{self.family.obs_dim}/{self.family.act_dim}")
        C.check_batches(self.cfg, ds.num_transitions, f"the dataset in {path}")
        self.loaded = (seed, ds)
        return ds


def first_dataset(out: Path) -> Path | None:
    """The dataset folder of the run folder's first seed (by name) that has one; None if none has."""
    found = sorted(Path(out).glob("seed_*/data/meta.json"))
    return found[0].parent if found else None


def family_of_data(out: Path) -> Family:
    """The family of a run folder whose data have none (imported without --family): the sizes and
    tasks of its first seed's dataset."""
    path = first_dataset(out)
    if path is None:
        raise MbmlError(f"{out} has no family and no dataset; import one first (`mbml import-minari --out "
                        f"{out}/seed_0/data ...`)")
    ds = D.load(path, min_tasks=2)
    return data_family(ds.observations.shape[-1], ds.actions.shape[-1], ds.tasks)


class Parts:
    """The finished parts of a stage that has no checkpoint of its own (the evaluations): each part's
    result is kept in `ckpt/<name>.parts.json` as soon as it is done, so an interrupted stage redoes
    only the part it was in, and `ckpt/<name>.progress.json` tells `mbml status` how far it is. Each
    part draws its own PRNG key, so a resumed stage writes the same numbers as an uninterrupted one.
    Results must be JSON (lists, floats). The kept parts record a hash of the file they were computed
    from (`made_from`: the student, the teachers); if it changed since (a student trained again), the
    kept parts are dropped."""

    def __init__(self, run: "RunFolder", seed: int, name: str, total: int, force: bool, made_from: Path):
        self.ckpt = run.seed_dir(seed) / "ckpt" / f"{name}.msgpack"  # never written; names the files below
        self.path = self.ckpt.with_suffix(".parts.json")
        self.made_from = hashlib.sha256(made_from.read_bytes()).hexdigest() if made_from.exists() else ""
        if force:
            self.clear()
        kept = io.read_json(self.path) if self.path.exists() else {}
        self.done = kept.get("parts", {}) if kept.get("made_from") == self.made_from else {}
        self.total = total
        self.report = run.bar(f"seed {seed} {name.replace('_', ' ')}")
        self.report(len(self.done), total)

    def __call__(self, part: str, compute: Callable[[], object]):
        """`compute()`, or its kept result if this part finished in an earlier attempt."""
        if part not in self.done:
            self.done[part] = compute()
            io.write_json(self.path, {"made_from": self.made_from, "parts": self.done})
            io.write_json(progress_file(self.ckpt), {"done": len(self.done), "total": self.total})
            self.report(len(self.done), self.total)
        return self.done[part]

    def clear(self) -> None:
        """Remove the kept parts (after the stage's output is written, or to redo it)."""
        remove_checkpoint(self.ckpt)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (Linux reports ru_maxrss in KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _append_csv(path: Path, row: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def _tensorboard(path: Path):
    try:
        from tensorboardX import SummaryWriter
    except ImportError:  # optional
        return None
    return SummaryWriter(str(path))
