"""The run folder and its stages: collect -> teachers -> ensembles -> distill -> evaluate -> report.

Each stage reads its inputs from the run folder, writes its outputs atomically (the file that marks
it done last), and is skipped when already done unless forced. Long stages checkpoint between
chunks, so a killed run continues where it stopped.

    OUT/config.json                 resolved config (a rerun with a different one is refused)
    OUT/run.json                    versions, seeds and methods asked for
    OUT/seed_S/data/                the K-task dataset (mbml.data format)
    OUT/seed_S/teachers.msgpack     BCQ teachers, best evaluated checkpoint  (+ teachers.json)
    OUT/seed_S/ensembles.msgpack    reward ensembles                        (+ relabel.npz, relabel.json)
    OUT/seed_S/next_state_ensembles.msgpack   next-state ensembles, where tasks differ in dynamics
    OUT/seed_S/students/M.msgpack   student of method M                     (+ M.csv learning curve)
    OUT/seed_S/eval/M.json          evaluation protocol on train and test tasks, diagnostic
    OUT/seed_S/timings.json         seconds per stage
    OUT/results.json, report.md, figures/
"""

from __future__ import annotations

import csv
import hashlib
import platform
import resource
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

import mbml
from mbml import bcq, config as C, data as D, io, rollout, student as S
from mbml.collect import collect, episode_returns
from mbml.config import METHODS, RunConfig
from mbml.distill import distill
from mbml.ensembles import (heldout, init_members, next_state_relabeller, next_state_target, relabel, relabel_stats,
                            reward_target, train_ensembles, true_rewards)
from mbml.errors import MbmlError
from mbml.evaluate import evaluate_student, inference_diagnostic
from mbml.families import Family, data_family, get_family
from mbml.hostenv import collect_host, evaluate_student_host, mean_returns
from mbml.status import read_record
from mbml.steps import (HEARTBEAT, STAGES, Progress, Step, done_marker, seed_steps,  # noqa: F401 (re-exported)
                        stage_steps)
from mbml.teachers import evaluate_own_tasks, train_teachers
from mbml.train_loop import progress_file, remove_checkpoint
from mbml.transitions import device_data


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
class Run:
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

    @staticmethod
    def open(out: Path, cfg: RunConfig | None = None, progress: Progress | None = None, create: bool = True) -> "Run":
        """Open (or create) a run folder; refuses a folder made with a different config. `create=False`
        writes nothing yet (`save_config` does, once the command has checked its inputs)."""
        out = Path(out)
        saved = out / "config.json"
        if saved.exists():
            old = C.read(saved)  # fields added since then take their defaults
            if cfg is None:
                cfg = old
            else:
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
        run = Run(out, cfg, family, progress)
        if create:
            run.save_config()
        return run

    def save_config(self) -> None:
        """Write config.json, if the folder has none yet (a new run folder)."""
        if not (self.out / "config.json").exists():
            io.write_json(self.out / "config.json", C.to_dict(self.cfg))

    def require(self, seed: int, name: str) -> None:
        """A one-line MbmlError naming the command that makes step `name`'s output, unless it exists."""
        step = next(s for s in seed_steps(METHODS, ensembles=True) if s.name == name)
        if not (self.seed_dir(seed) / step.marker).exists():
            which = f" --methods {step.method}" if step.method else ""
            raise MbmlError(f"no {step.output} in {self.seed_dir(seed)}; run `mbml {step.stage} --out {self.out}"
                            f"{which}` first")

    def check_family_gives(self, method: str) -> None:
        if METHODS[method].relabel == "true" and self.family.true_reward is None:
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
        return jax.random.fold_in(jax.random.PRNGKey(seed), STAGES.index(stage))

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
        path = self.seed_dir(seed) / "timings.json"
        timings = io.read_json(path) if path.exists() else {}
        timings[stage] = timings.get(stage, 0.0) + before + time.perf_counter() - t0
        io.write_json(path, timings)
        sidecar.unlink(missing_ok=True)
        memory = self.seed_dir(seed) / "memory.json"  # the peak over the processes that ran this seed's stages
        seen = io.read_json(memory)["peak_rss_mb"] if memory.exists() else 0.0
        io.write_json(memory, {"peak_rss_mb": max(seen, peak_rss_mb())})

    def record(self, seeds, methods) -> None:
        path = self.out / "run.json"
        old = read_record(self.out)
        io.write_json(path, {"family": self.cfg.family, "preset": self.cfg.preset,
                             "seeds": sorted(set(old.get("seeds", [])) | set(seeds)),
                             "methods": list(dict.fromkeys([*old.get("methods", []), *methods])),
                             "versions": versions()})

    # ---------------------------------------------------------------- stages

    def run_step(self, step: Step, seed: int, force: bool = False) -> None:
        """Run one step of `seed_steps` (skipped when done, unless forced)."""
        if step.method is None:
            getattr(self, step.name)(seed, force)
        else:
            getattr(self, step.stage)(seed, step.method, force)

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
                timings = io.read_json(timings_path) if timings_path.exists() else {}
                if name not in timings:
                    io.write_json(timings_path, {**timings, name: io.read_json(beat)["seconds"]})
                beat.unlink()
        return True

    def collect(self, seed: int, force: bool = False) -> None:
        d = self.seed_dir(seed)
        if self._done(seed, d / done_marker("collect"), force, "collect"):
            return
        ckpt = d / "ckpt" / "collect.msgpack"
        with self.timed(seed, "collect"):
            args = (self.family, self.cfg.sac, self.key(seed, "collect"), self.cfg.lift)
            kw = dict(ckpt=ckpt, progress=self.bar(f"seed {seed} collect"))
            if self.family.jax_env is not None:
                ds = collect(*args, **kw)
            else:
                log, writer = self.collection_log(seed, fresh=not ckpt.exists())
                try:
                    ds = collect_host(*args, **kw, log=log)
                finally:
                    if writer is not None:
                        writer.close()
            ds.meta.update({"seed": seed, "family": self.family.name})
            D.save(ds, d / "data")
            self.loaded = None
        remove_checkpoint(ckpt)

    def collection_log(self, seed: int, fresh: bool):
        """`collect_host`'s logger: one row per task and progress point in `seed_S/collect.csv`
        (SAC metrics, mean episode return) and TensorBoard scalars `collect/NAME/task_I` under
        `seed_S/logs/collect`. A resumed collection may repeat the steps since its last checkpoint;
        readers keep a (step, task)'s last row."""
        path = self.seed_dir(seed) / "collect.csv"
        if fresh:
            path.unlink(missing_ok=True)
        writer = _tensorboard(self.seed_dir(seed) / "logs" / "collect")

        def log(step: int, rows: dict) -> None:
            for i in range(len(rows["episodes"])):
                row = {name: float(v[i]) for name, v in rows.items()}
                _append_csv(path, {"step": step, "task": i, **row})
                if writer is not None:
                    for name, v in row.items():
                        if np.isfinite(v):
                            writer.add_scalar(f"collect/{name}/task_{i}", v, step)
        return log, writer

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

    def teacher_template(self, k: int):
        return jax.vmap(lambda kk: bcq.init(self.cfg.bcq, kk, self.family.obs_dim, self.family.act_dim))(
            jax.random.split(jax.random.PRNGKey(0), k))

    def teachers(self, seed: int, force: bool = False) -> None:
        d = self.seed_dir(seed)
        if self._done(seed, d / done_marker("teachers"), force, "teachers"):
            return
        ds = self.dataset(seed)
        with self.timed(seed, "teachers"):
            best, curve = train_teachers(self.family, self.cfg.bcq, ds, self.key(seed, "teachers"), self.cfg.lift,
                                         ckpt=d / "ckpt" / "teachers.msgpack", progress=self.bar(f"seed {seed} teachers"))
            io.save_pytree(d / "teachers.msgpack", jax.device_get(best))
            io.write_json(d / "teachers.json", {"eval_curve": curve, "eval_every": self.cfg.bcq.eval_every,
                                                # None: no simulator, the last checkpoint was kept
                                                "best": np.nanmax(curve, axis=0) if len(curve) else None})
        remove_checkpoint(d / "ckpt" / "teachers.msgpack")

    def load_teachers(self, seed: int):
        ds_k = self.family.train_tasks.shape[0]
        path = self.seed_dir(seed) / "teachers.msgpack"
        self.require(seed, "teachers")
        return io.load_pytree(path, self.teacher_template(ds_k))

    def ensembles(self, seed: int, force: bool = False) -> None:
        d = self.seed_dir(seed)
        if self._done(seed, d / done_marker("ensembles"), force, "ensembles", "next_state_ensembles"):
            return
        ds = self.dataset(seed)
        ens = self.cfg.ensemble
        with self.timed(seed, "ensembles"):
            data = device_data(ds)
            members = train_ensembles(ens, reward_target(ens), data, self.key(seed, "ensembles"), self.cfg.lift,
                                      ckpt=d / "ckpt" / "ensembles.msgpack", progress=self.bar(f"seed {seed} reward ensembles"))
            io.save_pytree(d / "ensembles.msgpack", jax.device_get(members))
            next_members, held = self.next_state_ensembles(seed, ds, data) if ens.next_state else (None, None)
            lab = relabel(ens, members, ds, self.family.true_reward, next_members, held,
                          progress=self.bar(f"seed {seed} relabelling"))
            buf = d / "relabel.npz.tmp"
            with open(buf, "wb") as f:
                np.savez(f, **lab)
            buf.replace(d / "relabel.npz")
            io.write_json(d / "relabel.json", relabel_stats(lab))
        for name in ("ensembles", "next_state_ensembles"):
            remove_checkpoint(d / "ckpt" / f"{name}.msgpack")

    def next_state_ensembles(self, seed: int, ds: D.Dataset, data: dict):
        """Train and save the next-state ensembles (spec §4.2) on all but the held-out transitions;
        returns (members, held-out mask [N])."""
        ens, d = self.cfg.ensemble, self.seed_dir(seed)
        held = heldout(ds.num_transitions, ens.next_state_holdout)
        members = train_ensembles(ens, next_state_target(ens, self.family.obs_dim), data,
                                  jax.random.fold_in(self.key(seed, "ensembles"), 1), self.cfg.lift,
                                  ckpt=d / "ckpt" / "next_state_ensembles.msgpack",
                                  progress=self.bar(f"seed {seed} next-state ensembles"), rows=np.flatnonzero(~held))
        io.save_pytree(d / "next_state_ensembles.msgpack", jax.device_get(members))
        return members, held

    def load_next_state_ensembles(self, seed: int, k: int):
        """(target, members [K, members, ...]) of the saved next-state ensembles of K tasks."""
        ens = self.cfg.ensemble
        target = next_state_target(ens, self.family.obs_dim)
        template = init_members(ens, target, k, self.family.obs_dim, self.family.act_dim, jax.random.PRNGKey(0))
        return target, io.load_pytree(self.seed_dir(seed) / "next_state_ensembles.msgpack", template)

    def relabelling(self, seed: int, method: str, ds: D.Dataset) -> dict | None:
        """Accept mask and rewards [K_i, K_j, N] the method relabels with (None without relabelling), and
        with next-state ensembles the mean next states: stored [K_i, K_j, N, obs] or a function
        recomputing them (`ensembles.next_state_relabeller`)."""
        kind = METHODS[method].relabel
        if kind == "none":
            return None
        if kind == "true":
            self.check_family_gives(method)
            k = ds.num_tasks
            accept = np.broadcast_to(~np.eye(k, dtype=bool)[:, :, None], (k, k, ds.num_transitions))
            return {"accept": jnp.asarray(accept), "reward": jnp.asarray(true_rewards(ds, self.family.true_reward))}
        path = self.seed_dir(seed) / "relabel.npz"
        self.require(seed, "ensembles")
        with np.load(path, allow_pickle=False) as z:
            lab = {"accept": jnp.asarray(z["accept"]), "reward": jnp.asarray(z["mean"])}
            if "next_obs" in z.files:
                lab["next_obs"] = jnp.asarray(z["next_obs"])
            elif "next_std" in z.files:
                lab["next_obs"] = next_state_relabeller(*self.load_next_state_ensembles(seed, ds.num_tasks))
        return lab

    def evaluate_student(self, params, tasks, key) -> dict:
        """The evaluation protocol (`eval.repeats` runs per task, averaged): jitted for pure-JAX
        families, host-stepped otherwise."""
        fn = evaluate_student if self.family.jax_env is not None else evaluate_student_host
        args = (self.family, self.cfg.distill, self.cfg.eval, self.cfg.bcq.phi, params)
        tasks = jnp.asarray(tasks, jnp.float32) if self.family.jax_env is not None else np.asarray(tasks)
        runs = [jax.device_get(fn(*args, tasks, jax.random.fold_in(key, r) if r else key))
                for r in range(self.cfg.eval.repeats)]
        out = {k: np.asarray(v) for k, v in runs[0].items()}
        for k in ("returns", "score"):
            out[k] = np.mean([np.asarray(r[k]) for r in runs], axis=0)
        return out

    def student_template(self):
        return S.init(self.cfg.distill, jax.random.PRNGKey(0), self.family.obs_dim, self.family.act_dim)

    def distill(self, seed: int, method: str, force: bool = False) -> None:
        d = self.seed_dir(seed) / "students"
        if self._done(seed, self.seed_dir(seed) / done_marker("distill", method), force, f"distill_{method}"):
            return
        ds = self.dataset(seed)
        teachers = self.load_teachers(seed)
        data = device_data(ds)
        lab = self.relabelling(seed, method, ds)
        log_path = d / f"{method}.csv"
        ckpt = self.seed_dir(seed) / "ckpt" / f"distill_{method}.msgpack"
        if not ckpt.exists():
            log_path.unlink(missing_ok=True)
        writer = _tensorboard(self.seed_dir(seed) / "logs" / method)

        def on_eval(params, step, metrics):
            key = jax.random.fold_in(self.key(seed, "distill"), step)
            train = self.evaluate_student(params, self.family.train_tasks, key)
            test = self.evaluate_student(params, self.family.test_tasks, jax.random.fold_in(key, 1))
            metrics["train_score"] = float(train["score"].mean())  # selects the checkpoint (training tasks only)
            metrics["test_score"] = float(test["score"].mean())  # reported, never used for selection
            _append_csv(log_path, {"step": step, **metrics})
            if writer is not None:
                for k, v in metrics.items():
                    writer.add_scalar(f"distill/{k}", v, step)
            return metrics["train_score"]

        with self.timed(seed, f"distill_{method}"):
            params, qnorm = distill(self.cfg.distill, self.cfg.bcq, method, self.family.act_dim, data, lab, teachers,
                                    self.key(seed, "distill"), ckpt=ckpt, progress=self.bar(f"seed {seed} {method}"),
                                    on_eval=on_eval)
            io.save_pytree(d / f"{method}.msgpack", {"params": jax.device_get(params), "qnorm": qnorm})
        if writer is not None:
            writer.close()
        remove_checkpoint(ckpt)

    def load_student(self, seed: int, method: str):
        self.require(seed, f"distill_{method}")
        path = self.seed_dir(seed) / "students" / f"{method}.msgpack"
        tree = io.load_pytree(path, {"params": self.student_template(), "qnorm": np.zeros(2, np.float32)})
        return tree["params"]

    def evaluate(self, seed: int, method: str, force: bool = False) -> None:
        path = self.seed_dir(seed) / done_marker("evaluate", method)
        if self._done(seed, path, force, f"evaluate_{method}"):
            return
        params = self.load_student(seed, method)
        key = self.key(seed, "evaluate")
        diagnose = self.family.true_reward is not None

        def protocol(i, tasks):
            r = self.evaluate_student(params, tasks, jax.random.fold_in(key, i))
            return {k: v.tolist() for k, v in r.items()}

        def diagnostic():
            ds = self.dataset(seed)
            diag = inference_diagnostic(self.cfg.distill, 2 * self.cfg.distill.context_size, params.encoder,
                                        device_data(ds), jnp.asarray(true_rewards(ds, self.family.true_reward)),
                                        jax.random.fold_in(key, 99))
            return {k: float(v) for k, v in diag.items()}

        with self.timed(seed, f"evaluate_{method}"):
            parts = Parts(self, seed, f"evaluate_{method}", 2 + diagnose, force,
                          made_from=self.seed_dir(seed) / "students" / f"{method}.msgpack")
            out = {split: parts(split, lambda i=i, t=tasks: protocol(i, t))
                   for i, (split, tasks) in enumerate((("train", self.family.train_tasks), ("test", self.family.test_tasks)))}
            if diagnose:
                out["diagnostic"] = parts("diagnostic", diagnostic)
            io.write_json(path, out)
        parts.clear()

    def references(self, seed: int, force: bool = False) -> None:
        """Teachers on their own tasks; oracle and random policies (MuJoCo: random and zero actions) on
        train and test tasks."""
        path = self.seed_dir(seed) / done_marker("references")
        if self._done(seed, path, force, "references"):
            return
        key = jax.random.fold_in(self.key(seed, "evaluate"), 1000)
        fam = self.family

        def own():
            teachers = self.load_teachers(seed)
            return np.asarray(evaluate_own_tasks(fam, self.cfg.bcq, self.cfg.eval.episodes, teachers,
                                                 fam.train_tasks, key)).tolist()

        def reference(k, tasks):
            if fam.jax_env is not None:
                refs = rollout.reference_scores(fam, tasks, k)
            else:  # MuJoCo families have no scripted oracle: a uniform random policy, and zero actions
                rand = lambda obs, kk: jax.random.uniform(kk, obs.shape[:1] + (fam.act_dim,), minval=-1, maxval=1)  # noqa: E731
                still = lambda obs, kk: jnp.zeros(obs.shape[:1] + (fam.act_dim,))  # noqa: E731
                refs = {"random": mean_returns(fam, np.asarray(tasks), rand, k, self.cfg.eval.episodes),
                        "zero_action": mean_returns(fam, np.asarray(tasks), still, k, self.cfg.eval.episodes)}
            return {name: np.asarray(v).tolist() for name, v in refs.items()}

        with self.timed(seed, "references"):
            parts = Parts(self, seed, "references", 3, force, made_from=self.seed_dir(seed) / "teachers.msgpack")
            out = {"teachers": {"train": parts("teachers", own)}}
            for i, (split, t) in enumerate((("train", fam.train_tasks), ("test", fam.test_tasks))):
                refs = parts(split, lambda k=jax.random.fold_in(key, i + 1), t=t: reference(k, t))
                for name, v in refs.items():
                    out.setdefault(name, {})[split] = v
            ds = self.dataset(seed)
            out["dataset_returns"] = episode_returns(ds).mean(0).tolist()
            io.write_json(path, out)
        parts.clear()


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

    def __init__(self, run: "Run", seed: int, name: str, total: int, force: bool, made_from: Path):
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
