"""`mbml sweep`: a grid of families x presets x methods x seeds, run as Ray tasks on this machine or a cluster.

    mbml sweep --families point-nav walker-param --presets smoke --methods full contextual_bcq \\
               --seeds 0 1 --out runs/sweep [--address HOST:PORT]

One run folder per family and preset (`OUT/FAMILY-PRESET`, the folder `mbml run` would make). Each
seed has a *shared* job (collection, and the teachers, ensembles and references where a method of
the grid needs them) and one job per method (its training and evaluation), which starts once the
seed's shared job is done. A job is the run folder's resumable steps (`Run.run_step`): a job whose
worker dies is retried by Ray (`--retries`) and continues from the checkpoints its last attempt left.

Only this process (the driver) writes a run folder's shared files (config.json, run.json, the
report) and `OUT/sweep.json`; the jobs write their own seed's outputs, and the one file the jobs of
a seed share (timings.json) is updated under a file lock (`io.update_json`). At the end the driver
writes each run folder's report, a comparison per run folder (`OUT/compare/FOLDER`, `mbml compare`)
and `OUT/sweep.md`, every comparison table and the runs table.

Every node needs mbml installed and the run folders at the same absolute path (a shared file
system); a job that cannot see its run folder fails with an error naming its host.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mbml import io
from mbml.errors import MbmlError, one_line

GRID_FILE = "sweep.json"


@dataclass(frozen=True)
class Job:
    """One Ray task: the steps of one seed of one run folder, shared (method None) or one method's."""

    folder: str  # the run folder's name under OUT: FAMILY-PRESET
    seed: int
    method: str | None
    steps: tuple[str, ...]  # step names (mbml.steps.seed_steps), in pipeline order

    @property
    def name(self) -> str:
        return f"{self.folder} seed {self.seed} {self.method or 'shared'}"


def folder_name(family: str, preset: str) -> str:
    return f"{family}-{preset}"


def plan(families, presets, methods, seeds) -> list[Job]:
    """The grid's jobs: per run folder and seed, the shared job, then one job per method."""
    from mbml.steps import seed_steps

    steps = seed_steps(list(methods))
    jobs = []
    for family in families:
        for preset in presets:
            for seed in seeds:
                folder = folder_name(family, preset)
                jobs.append(Job(folder, seed, None, tuple(s.name for s in steps if s.method is None)))
                jobs += [Job(folder, seed, m, tuple(s.name for s in steps if s.method == m)) for m in methods]
    return jobs


def check_grid(families, presets, methods, seeds) -> tuple[str, ...]:
    """The grid's methods (`all` expanded); a one-line MbmlError for an unknown or repeated name."""
    from mbml.config import preset as get_preset
    from mbml.orchestrate import _check, expand_methods

    for name, given in (("families", families), ("presets", presets)):
        if not given:
            raise MbmlError(f"give at least one of --{name}")
        if len(set(given)) != len(given):
            raise MbmlError(f"--{name} repeat: {list(given)}")
    methods = expand_methods(methods)
    _check(methods, seeds, stages=("distill",))
    for f in families:
        for p in presets:
            get_preset(f, p)  # an unknown family or preset, or one the family has not (demo)
    return methods


def grid_record(families, presets, methods, seeds) -> dict:
    return {"families": list(families), "presets": list(presets), "methods": list(methods), "seeds": list(seeds)}


def read_grid(out: Path) -> dict | None:
    path = Path(out) / GRID_FILE
    if not path.exists():
        return None
    rec = io.read_json(path)
    if not isinstance(rec, dict) or not isinstance(rec.get("grid"), dict):
        raise MbmlError(f"{path} is not an mbml sweep record; fix or remove it")
    return rec


# ---- the jobs (run in Ray workers) ----

def run_job(folder: str, seed: int, steps: tuple[str, ...], methods: tuple[str, ...], force: bool,
            after=None) -> dict:
    """Run one job's steps in the run folder `folder` (an absolute path every node sees). `after`: the
    seed's shared job's result, passed only so that Ray starts this job once that one is done.
    Returns where it ran, how long it took, and the steps it resumed from a checkpoint."""
    from mbml.pipeline import Run
    from mbml.steps import seed_steps

    out = Path(folder)
    if not (out / "config.json").exists():
        raise MbmlError(f"the Ray worker on {socket.gethostname()} cannot see the run folder {out}: every node "
                        "needs the run folders at the same path (a shared file system)")
    t0 = time.perf_counter()
    run = Run.open(out, None, None, create=False)
    resumed = {}
    for step in (s for s in seed_steps(list(methods)) if s.name in steps):
        d = run.seed_dir(seed)
        progress = d / "ckpt" / f"{step.ckpt}.progress.json"
        if step.ckpt and not (d / step.marker).exists() and progress.exists():
            try:
                p = io.read_json(progress)
                resumed[step.name] = [int(p["done"]), int(p["total"])]
            except (MbmlError, KeyError, TypeError, ValueError):
                pass
        run.run_step(step, seed, force)
    return {"host": socket.gethostname(), "pid": os.getpid(), "seconds": time.perf_counter() - t0,
            "resumed": resumed}


def _worker_env(cpus_per_job: float, gpus_per_job: float) -> dict:
    """Environment of the jobs' worker processes: one XLA CPU thread per CPU a job holds (the nets are
    too small to share cores well, as with `--workers`); a GPU shared by several jobs is not
    preallocated whole by each."""
    env = {}
    if cpus_per_job <= 1:
        env["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
    if 0 < gpus_per_job < 1:
        env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{0.9 * gpus_per_job:.3f}"
    return env


# ---- the driver ----

def _connect(address: str | None, cpus: int | None) -> None:
    """Start Ray on this machine (address None) or join the cluster at `address`."""
    import logging

    import ray

    if address is None:
        # "local": a new Ray of this command's own, even where `ray start` left one (or its address file)
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR, object_store_memory=200 * 1024 ** 2)  # jobs pass only small results
        return
    if address != "auto" and not address.startswith("ray://"):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise MbmlError(f"--address {address!r}: give HOST:PORT of a Ray head (`ray start --head` prints it), or auto")
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except OSError as e:
            raise MbmlError(f"--address {address}: no Ray head answers there ({one_line(e)}); start one with "
                            "`ray start --head`, or leave --address out to start Ray on this machine") from None
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
    except (ConnectionError, RuntimeError, ValueError) as e:
        token = "" if os.environ.get("RAY_AUTH_MODE") == "token" else (
            "; a cluster with token authentication needs RAY_AUTH_MODE=token and its token (RAY_AUTH_TOKEN, or "
            "the token file) in this command's environment too")
        raise MbmlError(f"--address {address}: cannot join the Ray cluster: {one_line(e)}{token}") from None


def _check_resources(cpus_per_job: float, gpus_per_job: float) -> None:
    """A job asking for more than any node has would wait for ever: refuse it (Ray stays up only while
    the driver runs, so the caller's `finally` stops it)."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    for what, need in (("CPU", cpus_per_job), ("GPU", gpus_per_job)):
        most = max((n.get(what, 0.0) for n in nodes), default=0.0)
        if need > most:
            flag = f"--{what.lower()}s-per-job"
            raise MbmlError(f"{flag} {need:g}: no node of the Ray cluster has that many {what}s (the most is {most:g})")


def _cause(e: BaseException) -> str:
    """A failed job's error on one line (a Ray task error carries the job's own exception)."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, MbmlError):
        return str(cause)
    if cause is not None:
        return f"{type(cause).__name__}: {one_line(cause)}"
    return one_line(e)


def job_states(out: Path, jobs: list[Job], finished: dict, now: float | None = None) -> list[dict]:
    """Per job: {"job", "state", "seconds", "doing"}. `finished`: job name -> "done" or an error (the
    driver's knowledge); otherwise the state is read from the run folder (`mbml status`): done when
    every step is, running while a step's heartbeat is fresh, stopped when a step has a checkpoint."""
    from mbml.status import run_status

    rows_of = {}
    out_rows = []
    for job in jobs:
        if job.folder not in rows_of:
            folder = Path(out) / job.folder
            rows_of[job.folder] = run_status(folder, now) if (folder / "config.json").exists() else []
        rows = [r for r in rows_of[job.folder] if r["seed"] == job.seed and r["stage"] in job.steps]
        states = {r["state"] for r in rows}
        seconds = sum(r["seconds"] or 0.0 for r in rows)
        running = next((r for r in rows if r["state"] == "running"), None)
        doing = ""
        if running is not None:
            how = f" {running['done']}/{running['total']}" if running["done"] is not None else ""
            doing = f"{running['stage']}{how}"
        said = finished.get(job.name)
        if said is not None and said != "done":
            state = "failed"
            doing = said
        elif said == "done" or (rows and states == {"done"}):
            state = "done"
        elif running is not None:
            state = "running"
        elif states & {"stopped", "started"}:
            state = "stopped"
        else:
            state = "pending"
        out_rows.append({"job": job.name, "state": state, "seconds": seconds, "doing": doing})
    return out_rows


def status_lines(out: Path, now: float | None = None) -> list[str]:
    """`mbml status SWEEP`: the grid and every job's state, from the run folders."""
    from mbml.lock import writer
    from mbml.status import hms

    rec = read_grid(out)
    g = rec["grid"]
    jobs = plan(g["families"], g["presets"], g["methods"], g["seeds"])
    rows = job_states(out, jobs, {}, now)
    who = writer(out)
    counts = {s: sum(r["state"] == s for r in rows) for s in ("done", "running", "stopped", "pending")}
    lines = [f"{out}  sweep of {len(jobs)} jobs: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
             + ("  (summary written)" if (Path(out) / "sweep.md").exists() else "")
             + (f"  (being run by {who})" if who else "")]
    width = max(len(j.name) for j in jobs)
    for r in rows:
        lines.append(f"  {r['job']:<{width}}  {r['state']:<8} {hms(r['seconds']):>8}  {r['doing']}".rstrip())
    return lines


def _table(rows: list[dict], limit: int = 30):
    """The live table: every job of a small grid; of a larger one the running, stopped and failed jobs,
    with the others counted in the title."""
    from rich.table import Table

    from mbml.status import hms

    colour = {"done": "green", "running": "cyan", "failed": "red", "stopped": "yellow", "pending": "dim"}
    counts = {s: sum(r["state"] == s for r in rows) for s in colour}
    t = Table(title="mbml sweep: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n), expand=False)
    for c in ("job", "state", "time", "now"):
        t.add_column(c)
    shown = rows if len(rows) <= limit else [r for r in rows if r["state"] in ("running", "stopped", "failed")]
    for r in shown:
        t.add_row(r["job"], f"[{colour[r['state']]}]{r['state']}[/]", hms(r["seconds"]), r["doing"])
    if len(shown) < len(rows):
        t.add_row(f"[dim]and {len(rows) - len(shown)} jobs done or pending[/]", "", "", "")
    return t


def sweep(out: Path, families, presets, methods, seeds, address: str | None = None, cpus: int | None = None,
          cpus_per_job: float = 1.0, gpus_per_job: float = 0.0, retries: int = 3, force: bool = False,
          quiet: bool = False) -> Path:
    """Run the grid (module docstring); returns OUT/sweep.md."""
    from mbml.config import preset as get_preset
    from mbml.lock import FolderLock
    from mbml.pipeline import Run
    from mbml.run_folder import versions
    from mbml.steps import STAGES

    methods = check_grid(families, presets, methods, seeds)
    try:
        import ray  # noqa: F401
    except ImportError:
        raise MbmlError('mbml sweep needs Ray, an optional dependency: pip install -e ".[ray]"') from None
    if cpus_per_job <= 0 or gpus_per_job < 0 or retries < 0:
        raise MbmlError("--cpus-per-job must be > 0, --gpus-per-job and --retries >= 0")
    out = Path(out).resolve()
    grid = grid_record(families, presets, methods, seeds)
    old = read_grid(out)
    if old is not None and old["grid"] != grid:
        diff = next(k for k in grid if grid[k] != old["grid"].get(k))
        raise MbmlError(f"{out} holds a sweep of another grid ({diff}: {old['grid'].get(diff)} there, {grid[diff]} "
                        "now); use another --out (nothing was changed)")
    jobs = plan(families, presets, methods, seeds)
    locks = [FolderLock(out)]
    try:
        locks[0].acquire()
        runs = {}
        for f in families:  # every folder checked before anything is written: a refused sweep changes nothing
            for p in presets:
                run = Run.open(out / folder_name(f, p), get_preset(f, p), None, create=False)
                run.check_inputs(seeds, methods, [s for s in STAGES if s != "report"], force)
                runs[folder_name(f, p)] = run
        for name, run in runs.items():
            lock = FolderLock(run.out)
            lock.acquire()
            locks.append(lock)
        _connect(address, cpus)
        try:
            _check_resources(cpus_per_job, gpus_per_job)  # before anything is written
            for run in runs.values():
                run.save_config()
                run.record(seeds, methods)
            io.write_json(out / GRID_FILE, {"grid": grid, "versions": versions()})
            finished = _run_jobs(out, jobs, methods, cpus_per_job, gpus_per_job, retries, force, quiet)
        finally:
            import ray

            ray.shutdown()  # stops the Ray this command started; a cluster joined stays up
        failed = {k: v for k, v in finished.items() if v != "done"}
        if failed:
            job, why = next(iter(failed.items()))
            more = f" (and {len(failed) - 1} more failed jobs: `mbml status {out}`)" if len(failed) > 1 else ""
            raise MbmlError(f"job {job} failed: {why}{more}")
        return _summarise(out, runs, seeds, methods)
    finally:
        for lock in reversed(locks):
            lock.release()


def _run_jobs(out: Path, jobs: list[Job], methods, cpus_per_job, gpus_per_job, retries, force, quiet) -> dict:
    """Submit the jobs, show their progress until every one has ended; job name -> "done" or its error."""
    import ray

    task = ray.remote(run_job)
    env = {"env_vars": _worker_env(cpus_per_job, gpus_per_job)}
    refs, shared = {}, {}
    for job in jobs:
        options = task.options(num_cpus=cpus_per_job, num_gpus=gpus_per_job, max_retries=retries,
                               retry_exceptions=False, name=job.name, runtime_env=env)
        after = shared.get((job.folder, job.seed)) if job.method else None
        ref = options.remote(str(out / job.folder), job.seed, job.steps, tuple(methods), force, after)
        if job.method is None:
            shared[(job.folder, job.seed)] = ref
        refs[ref] = job
    finished: dict[str, str] = {}
    live = None
    if not quiet and (sys.stderr.isatty() or os.environ.get("MBML_PROGRESS") == "1"):
        from rich.console import Console
        from rich.live import Live

        live = Live(_table(job_states(out, jobs, finished)), console=Console(stderr=True), refresh_per_second=2)
        live.start()
    try:
        pending = list(refs)
        last = 0.0
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=0.5)
            for ref in done:
                job = refs[ref]
                try:
                    got = ray.get(ref)
                    finished[job.name] = "done"
                    line = f"  {job.name}: done in {got['seconds']:.0f} s on {got['host']}" + "".join(
                        f"; {step} resumed at {d}/{t}" for step, (d, t) in got["resumed"].items())
                except ray.exceptions.RayError as e:
                    finished[job.name] = _cause(e)
                    line = f"  {job.name}: failed: {finished[job.name]}"
                _log(out, line)
                if live is None:
                    print(line, file=sys.stderr, flush=True)
            if live is not None and time.monotonic() - last > 1.0:
                live.update(_table(job_states(out, jobs, finished)))
                last = time.monotonic()
    except KeyboardInterrupt:
        for ref in refs:  # the jobs stop now; their checkpoints stay for the next `mbml sweep`
            ray.cancel(ref, force=True)
        raise
    finally:
        if live is not None:
            live.update(_table(job_states(out, jobs, finished)))
            live.stop()
    return finished


def _log(out: Path, line: str) -> None:
    with open(out / "sweep.log", "a") as f:
        f.write(time.strftime("%Y-%m-%d %H:%M:%S ") + line.strip() + "\n")


def _summarise(out: Path, runs: dict, seeds, methods) -> Path:
    """Each run folder's report and comparison, and OUT/sweep.md with every table."""
    from mbml import compare
    from mbml.orchestrate import reported_methods
    from mbml.report import runs_table, write_report

    results, md = [], ["# Sweep", ""]
    for name, run in runs.items():
        write_report(run, list(seeds), reported_methods(run, seeds, methods))
        loaded = compare.load([run.out])
        cmp = compare.write(loaded, out / "compare" / name)
        results += loaded
        md += [f"## `{name}`", "", f"Comparison: [compare/{name}/compare.md](compare/{name}/compare.md); "
               f"report: [{name}/report.md]({name}/report.md).", "", compare.table(cmp), ""]
    md += ["## Runs", "", runs_table(results), ""]
    io.atomic_write_bytes(out / "sweep.md", ("\n".join(md) + "\n").encode())
    return out / "sweep.md"
