"""The `mbml` command line (tyro on frozen dataclasses)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro

from mbml.errors import MbmlError
from mbml.status import hms, read_record

Stage = Literal["collect", "teachers", "ensembles", "distill", "evaluate", "report"]


@dataclass(frozen=True)
class Demo:
    """Every stage on the 2-D navigation toy (point-nav): datasets, teachers, ensembles, students, report."""

    out: Path = Path("runs/demo")
    """Run folder (created if missing; an existing one is continued)."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds; each runs the whole pipeline."""
    methods: tuple[str, ...] = ("full", "neither")
    """Students to train: full, no_relabel, no_triplet, neither, gt_relabel (the demo's budget fits two)."""
    preset: str = "demo"
    """Budget preset: smoke, demo, cpu or paper."""
    force: bool = False
    """Redo stages that are already done."""
    workers: int = 0
    """Processes running seeds in parallel (0: one; use more on many-core machines)."""
    quiet: bool = False
    """No progress bars."""


@dataclass(frozen=True)
class RunCmd:
    """Every stage on any family."""

    family: str = "point-nav"
    """Task family: point-nav, ant-dir, ant-goal, halfcheetah-vel, humanoid-dir, walker-param, umaze-goal."""
    preset: str = "cpu"
    """Budget preset: smoke, demo, cpu or paper."""
    out: Path | None = None
    """Run folder (default runs/FAMILY-PRESET)."""
    seeds: tuple[int, ...] = (0,)
    """Seeds; each runs the whole pipeline."""
    methods: tuple[str, ...] = ("full", "neither")
    """Students to train: full, no_relabel, no_triplet, neither, gt_relabel."""
    lift: Literal["vmap", "map"] = "vmap"
    """Lift per-task learners over the task axis with vmap (parallel) or lax.map (sequential)."""
    set: tuple[str, ...] = ()
    """Config changes on top of the preset, e.g. sac.total_steps=10000 distill.q_hidden=128,128 (kept in config.json)."""
    force: bool = False
    """Redo stages that are already done."""
    workers: int = 0
    """Processes running seeds in parallel (0: one; use more on many-core machines)."""
    quiet: bool = False
    """No progress bars."""


def _stage_cmd(stage: str, doc: str):
    @dataclass(frozen=True)
    class StageCmd:
        out: Path
        """Run folder made by `mbml run` or `mbml demo` (or a new one with --family/--preset)."""
        family: str | None = None
        """Family, for a new run folder (default: that of its imported data; none: teachers, ensembles only)."""
        preset: str | None = None
        """Preset, for a new run folder."""
        seeds: tuple[int, ...] | None = None
        """Seeds (default: those recorded in the run folder, else 0)."""
        methods: tuple[str, ...] | None = None
        """Methods for distill/evaluate/report (default: those recorded in the run folder)."""
        force: bool = False
        """Redo the stage even if done."""
        workers: int = 0
        """Processes running seeds in parallel (0: one; use more on many-core machines)."""
        quiet: bool = False
        """No progress bars."""

    StageCmd.__doc__ = doc
    StageCmd.__name__ = f"{stage.capitalize()}Cmd"  # not __qualname__: tyro reads field docs from the source
    StageCmd.stage = stage
    return StageCmd


STAGE_DOCS = {
    "collect": "Stage 1: SAC on each training task; the whole replay history becomes the dataset.",
    "teachers": "Stage 2: one BCQ teacher per task (best online-evaluated checkpoint).",
    "ensembles": "Stage 3: reward ensembles per task and relabelling of the other tasks' transitions.",
    "distill": "Stage 4: distil the teachers into one task-conditioned student per method.",
    "evaluate": "Stage 5: the evaluation protocol on training and test tasks, references, diagnostic.",
    "report": "Stage 6: results.json, report.md and figures.",
}
STAGE_CMDS = {s: _stage_cmd(s, d) for s, d in STAGE_DOCS.items()}


@dataclass(frozen=True)
class ExportMinari:
    """Export a multi-task dataset to Minari: one Minari dataset PREFIX/taskII-v0 per task (see README)."""

    out: Path
    """Run folder (its seed_SEED/data is exported) or a dataset folder."""
    prefix: str
    """Minari namespace for the datasets, e.g. mbml/point-nav-seed0."""
    seed: int = 0
    """Seed whose dataset is exported when --out is a run folder."""
    root: Path | None = None
    """Minari datasets folder (default: $MINARI_DATASETS_PATH, else ~/.minari/datasets)."""
    force: bool = False
    """Replace Minari datasets that already have these ids."""


@dataclass(frozen=True)
class ImportMinari:
    """Import Minari datasets, one per task, as a multi-task dataset folder."""

    ids: tuple[str, ...]
    """Minari dataset ids, in task order (at least 2), e.g. mbml/point-nav-seed0/task{00..19}-v0."""
    out: Path
    """Dataset folder to write, e.g. RUN/seed_0/data to use it in a run folder."""
    tasks: tuple[str, ...] = ()
    """Task parameters, one per id (0.5 1.5; "0.5,1" "1,2"), or a .json/.csv file of rows (default: metadata)."""
    family: str | None = None
    """mbml family of the data (true rewards, evaluation); none: teachers and ensembles only."""
    root: Path | None = None
    """Minari datasets folder (default: $MINARI_DATASETS_PATH, else ~/.minari/datasets)."""
    force: bool = False
    """Replace --out if it exists."""


@dataclass(frozen=True)
class Status:
    """How far a run folder is: each seed's stages, done / running / stopped / pending, with times."""

    run: tyro.conf.Positional[Path | None] = None
    """Run folder made by `mbml run` or `mbml demo` (or give it as --out)."""
    out: Path | None = None
    """Run folder, as the other commands take it."""


def _dataset_dir(out: Path, seed: int) -> Path:
    """`out` itself if it is a dataset folder, else the run folder's seed_SEED/data."""
    for path in (out, out / f"seed_{seed}" / "data"):
        if (path / "meta.json").exists():
            return path
    raise MbmlError(f"{out} holds no mbml dataset (no {out}/meta.json, no {out}/seed_{seed}/data/meta.json)")


def _minari_cmd(cmd) -> None:
    from mbml import minari_io

    if isinstance(cmd, ExportMinari):
        for dataset_id in minari_io.export_minari(_dataset_dir(cmd.out, cmd.seed), cmd.prefix, cmd.root, cmd.force):
            print(dataset_id)
    else:
        from mbml.lock import FolderLock
        from mbml.task_params import parse_tasks

        tasks = parse_tasks(list(cmd.tasks), list(cmd.ids)) if cmd.tasks else None
        run = cmd.out.parent.parent if cmd.out.parent.name.startswith("seed_") else None  # RUN/seed_S/data
        with FolderLock(run) if run is not None else contextlib.nullcontext():
            ds = minari_io.import_minari(list(cmd.ids), cmd.out, cmd.root, cmd.force, tasks, cmd.family)
        print(f"wrote {cmd.out} ({ds.num_tasks} tasks, {ds.num_transitions} transitions each)", file=sys.stderr)


class _Bars:
    """Progress per (seed, stage) label: rich bars on a terminal; elsewhere (a log file, CI) one plain
    line per label at most every `LINE_EVERY` seconds, with the rate and the time left, and one when
    the label finishes (only that one with `quiet`). `MBML_PROGRESS=1` forces the bars."""

    LINE_EVERY = 60.0

    def __init__(self, quiet: bool, clock=time.monotonic):
        self.quiet = quiet
        self.bars = not quiet and (sys.stderr.isatty() or os.environ.get("MBML_PROGRESS") == "1")
        self.clock = clock
        self.tasks = {}
        self.lines = {}  # label -> (start time, first done, last line time)
        self.progress = None
        if self.bars:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(TextColumn("{task.description:<26}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), transient=False)
            self.progress.start()

    def __call__(self, label: str, done: int, total: int):
        if self.bars:
            if label not in self.tasks:
                self.tasks[label] = self.progress.add_task(label, total=total)
            self.progress.update(self.tasks[label], completed=done, total=total)
            return
        now = self.clock()
        start, first, last = self.lines.setdefault(label, (now, done, now))
        if done >= total:
            print(f"  {label}: done {total}/{total} in {hms(now - start)}", file=sys.stderr, flush=True)
        elif not self.quiet and now - last >= self.LINE_EVERY:
            rate = (done - first) / max(now - start, 1e-9)
            left = f", about {hms((total - done) / rate)} left" if rate > 0 else ""
            print(f"  {label}: {done}/{total} ({rate:.3g}/s{left})", file=sys.stderr, flush=True)
            self.lines[label] = (start, first, now)

    def close(self):
        if self.progress is not None:
            self.progress.stop()


def _check(methods, seeds, workers: int = 0, stages=()):
    import numbers

    from mbml.config import METHODS, check_method

    for m in methods:
        check_method(m)
    if len(set(methods)) != len(methods):
        raise MbmlError(f"methods repeat: {list(methods)}")
    if not methods and {"distill", "evaluate", "report"} & set(stages):
        raise MbmlError(f"give at least one method (--methods): {', '.join(METHODS)}")
    if not seeds:
        raise MbmlError("give at least one seed")
    for s in seeds:  # PRNG seeds are 32-bit; run.json may hold anything
        if not (isinstance(s, numbers.Integral) and not isinstance(s, bool) and 0 <= s < 2 ** 32):
            raise MbmlError(f"seed {s!r}: seeds are integers from 0 to 2**32 - 1")
    if len(set(seeds)) != len(seeds):
        raise MbmlError(f"seeds repeat: {list(seeds)}")
    if workers < 0:
        raise MbmlError(f"--workers {workers}: must be 0 (one process) or more")


def _seed_stages(run, seed: int, methods, stages, force: bool) -> None:
    """Every requested stage for one seed, in pipeline order (`mbml ensembles` alone trains the
    ensembles even when no method asked for relabels with them)."""
    from mbml.steps import stage_steps

    for step in stage_steps(methods, stages):
        run.run_step(step, seed, force)


def _worker(out: Path, seed: int, methods, stages, force: bool, queue) -> None:
    """One seed in its own process (one XLA thread each: these nets are too small to share cores well)."""
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_cpu_multi_thread_eigen=false")
    from mbml.pipeline import Run

    signal.signal(signal.SIGTERM, _terminated)  # the parent's `_end_children`: stop like Ctrl-C, times kept
    _Watcher(hint=False)  # and end within the grace period even inside a long jitted chunk (the parent says why)

    run = Run.open(out, None, lambda label, done, total: queue.put((label, done, total)))
    _seed_stages(run, seed, methods, stages, force)


def _fan_out(out: Path, seeds, methods, stages, force: bool, workers: int, bars) -> None:
    import concurrent.futures as cf
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager, cf.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        events = manager.Queue()
        futures = [pool.submit(_worker, out, s, tuple(methods), tuple(stages), force, events) for s in seeds]
        try:
            _wait_for_seeds(set(futures), events, bars)
        except KeyboardInterrupt:  # stop the seeds now (they keep their times), not at the pool's exit
            _end_children()
            raise


def _wait_for_seeds(pending, events, bars) -> None:
    """Show the workers' progress until every seed is done; the first error cancels the rest."""
    import concurrent.futures as cf
    import queue as q

    while pending:
        done, pending = cf.wait(pending, timeout=0.2, return_when=cf.FIRST_EXCEPTION)
        while True:
            try:
                bars(*events.get_nowait())
            except q.Empty:
                break
        for f in done:
            if f.exception() is not None:
                for p in pending:
                    p.cancel()
                raise f.exception()


def default_workers(seeds) -> int:
    """One process: on 2 CPU cores two single-threaded seed processes ran no faster than one process
    using both cores (measured on the demo), and each process pays compilation again. More workers
    pay off on machines with many cores (--workers)."""
    return 1


def run_pipeline(out: Path, family: str, preset: str, seeds, methods, force=False, quiet=False, lift="vmap",
                 stages=("collect", "teachers", "ensembles", "distill", "evaluate", "report"),
                 workers: int = 0, overrides=(), cfg=None) -> dict | None:
    """Run `stages` for every seed and method in `out`; returns results.json's content if reported.

    `cfg` (a RunConfig) replaces family/preset/lift/overrides: stage commands pass the folder's own
    config.json, so a folder keeps working after its preset's defaults change in a newer mbml."""
    import dataclasses

    from mbml.config import override, preset as get_preset
    from mbml.lock import FolderLock
    from mbml.pipeline import Run
    from mbml.steps import OFFLINE_STAGES

    _check(methods, seeds, workers, stages)
    if cfg is None:
        cfg = override(dataclasses.replace(get_preset(family, preset), lift=lift), overrides)
    simulated = [s for s in stages if s not in OFFLINE_STAGES]
    if cfg.family is None and simulated:
        raise MbmlError(f"`mbml {simulated[0]}` needs a simulator, and {out} has no family (its data were imported "
                        f"without --family): only {' and '.join(f'`mbml {s}`' for s in OFFLINE_STAGES)} run on it")
    lock = FolderLock(out)  # one writer per run folder (the seed processes of --workers write for this one)
    bars = _Bars(quiet)
    try:
        lock.acquire()
        run = Run.open(out, cfg, bars, create=False)
        run.check_inputs(seeds, methods, stages, force)  # before anything is written: a failed command changes nothing
        run.save_config()
        run.record(seeds, methods)
        seed_stages = [s for s in stages if s != "report"]
        workers = workers or default_workers(seeds)
        if seed_stages and workers > 1 and len(seeds) > 1:
            _fan_out(run.out, seeds, methods, seed_stages, force, workers, bars)
        else:
            for seed in seeds:
                _seed_stages(run, seed, methods, seed_stages, force)
        if "report" in stages:
            from mbml.report import write_report
            return write_report(run, list(seeds), list(methods))
    finally:
        bars.close()
        lock.release()
    return None


def _summary(res: dict, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    from mbml.report import interval_text

    t = Table(title=f"MBML on {res['family']} ({res['preset']}, seeds {res['seeds']})")
    for c in ("method", "test score", "95% CI", "random→oracle", "train score"):
        t.add_column(c)
    for m, v in res["methods"].items():
        te = v["test"]
        frac = te.get("fraction_random_to_oracle")
        t.add_row(m, f"{te['mean']:.2f}", interval_text(te),
                  "–" if frac is None else f"{100 * frac:.0f}%", f"{v['train']['mean']:.2f}")
    Console(stderr=True).print(t)
    print(f"results: {out / 'results.json'}  report: {out / 'report.md'}", file=sys.stderr)


def _execute(cmd) -> None:
    if isinstance(cmd, (ExportMinari, ImportMinari)):
        _minari_cmd(cmd)
    elif isinstance(cmd, Status):
        from mbml.status import status_lines

        if (cmd.run is None) == (cmd.out is None):
            raise MbmlError("give the run folder once: `mbml status RUN` or `mbml status --out RUN`")
        print("\n".join(status_lines(cmd.run or cmd.out)))
    elif isinstance(cmd, Demo):
        res = run_pipeline(cmd.out, "point-nav", cmd.preset, cmd.seeds, cmd.methods, cmd.force, cmd.quiet,
                           workers=cmd.workers)
        _summary(res, cmd.out)
    elif isinstance(cmd, RunCmd):
        out = cmd.out or Path("runs") / f"{cmd.family}-{cmd.preset}"
        res = run_pipeline(out, cmd.family, cmd.preset, cmd.seeds, cmd.methods, cmd.force, cmd.quiet, cmd.lift,
                           workers=cmd.workers, overrides=cmd.set)
        _summary(res, out)
    else:
        from mbml import config as C

        from mbml.data import read_meta
        from mbml.pipeline import first_dataset

        saved = cmd.out / "config.json"
        cfg = None
        recorded = read_record(cmd.out)
        family = cmd.family
        if saved.exists():
            cfg = C.read(saved)  # the folder's own config, not today's preset
            for name, given in (("family", cmd.family), ("preset", cmd.preset)):
                if given is not None and given != getattr(cfg, name):
                    held = f"a {getattr(cfg, name)!r}" if getattr(cfg, name) is not None else "a family-less"
                    raise MbmlError(f"{cmd.out} holds {held} run, not {given!r} ({name}); use another --out")
        elif cmd.preset is None or (family is None and first_dataset(cmd.out) is None):
            raise MbmlError(f"{cmd.out} is not a run folder (no config.json); start one with `mbml run` "
                            "or give --family and --preset (--preset alone for data imported into it)")
        elif family is None:  # a new folder on imported data: their family, or none (OFFLINE_STAGES only)
            family = read_meta(first_dataset(cmd.out)).get("family")
        seeds = cmd.seeds or tuple(recorded.get("seeds", [0]))
        methods = cmd.methods or tuple(recorded.get("methods", ["full", "neither"]))
        res = run_pipeline(cmd.out, family, cmd.preset, seeds, methods, cmd.force, cmd.quiet,
                           stages=(cmd.stage,), workers=cmd.workers, cfg=cfg)  # cfg None: a new folder
        if res is not None:
            _summary(res, cmd.out)


def _terminated(signum, frame):
    raise KeyboardInterrupt


INTERRUPTED = "mbml: interrupted; run the same command again to continue from the last checkpoint"
INTERRUPT_GRACE = 5.0
"""Seconds the main thread gets to stop cleanly after Ctrl-C or SIGTERM before `_Watcher` ends the process."""


class _Watcher:
    """A Python signal handler runs only when the main thread is back in the interpreter; while it
    waits on one jitted chunk (minutes of XLA work for a distillation chunk on 2 cores) Ctrl-C and
    `kill` did nothing until the chunk ended. The signal also wakes this watcher's thread
    (`set_wakeup_fd` is written at C level, at once). If `INTERRUPT_GRACE` s later `main` is still
    running, the thread saves the running stages' times, stops seed worker processes (SIGTERM, then
    SIGKILL after another grace period) and ends the process. That is as safe as SIGKILL, which
    resume is built for: every output and checkpoint is written atomically. Only a real signal wakes
    it, and it does nothing once `main` has returned (`entry` ends an interrupted command at once)."""

    def __init__(self, hint: bool = True):
        self.said = threading.Event()  # main printed the hint
        if not hint:
            self.said.set()
        self.over = threading.Event()  # main returned
        r, self._w = os.pipe()
        os.set_blocking(self._w, False)
        self._previous = signal.set_wakeup_fd(self._w)
        threading.Thread(target=self._watch, args=(r,), daemon=True, name="mbml-interrupts").start()

    def close(self) -> None:
        """`main` is over: restore the previous wakeup fd; an idle watcher's thread ends."""
        self.over.set()
        signal.set_wakeup_fd(self._previous)
        os.close(self._w)

    def _watch(self, r: int) -> None:
        with os.fdopen(r, "rb", buffering=0) as f:
            while True:
                got = f.read(64)
                if not got:  # closed: main is over without a signal
                    return
                if signal.SIGINT in got or signal.SIGTERM in got:
                    break
        time.sleep(INTERRUPT_GRACE)
        if _ENDING_CHILDREN.is_set():  # main is stopping the seed workers (up to a grace period of their own)
            self.over.wait(INTERRUPT_GRACE + 5.0)
        if self.over.is_set():
            return  # main handled the interrupt (or returned to a caller that goes on)
        try:
            _end_children()
            if "mbml.pipeline" in sys.modules:  # not imported (and no stage running) for `mbml status`
                sys.modules["mbml.pipeline"].save_running_stages()
            if not self.said.is_set():
                _say(INTERRUPTED)
            _release_shared_semaphores()
        finally:
            os._exit(130)


def _say(line: str) -> None:
    """A line on stderr, if it can still be written (`mbml run | tee log`, then Ctrl-C: tee is gone)."""
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


_ENDING_CHILDREN = threading.Event()


def _end_children() -> None:
    """SIGTERM to this process's children (seed workers save their stage times), SIGKILL to those
    still there after `INTERRUPT_GRACE` s."""
    import multiprocessing

    _ENDING_CHILDREN.set()
    children = multiprocessing.active_children()
    for c in children:
        c.terminate()
    deadline = time.monotonic() + INTERRUPT_GRACE
    for c in children:
        c.join(max(0.0, deadline - time.monotonic()))
        if c.is_alive():
            c.kill()


def main(argv: list[str] | None = None) -> None:
    import tyro

    commands = {"demo": Demo, "run": RunCmd, **STAGE_CMDS, "export-minari": ExportMinari,
                "import-minari": ImportMinari, "status": Status}
    cmd = tyro.extras.subcommand_cli_from_dict(
        commands, args=argv, prog="mbml",
        description="mbml: multi-task batch RL with metric learning (Li et al., NeurIPS 2020).")
    previous = signal.getsignal(signal.SIGTERM)
    watcher = None
    try:
        signal.signal(signal.SIGTERM, _terminated)  # `kill PID` stops like Ctrl-C: times kept
        watcher = _Watcher()
        _execute(cmd)
    except MbmlError as e:
        print(f"mbml: error: {e}", file=sys.stderr)
        sys.exit(2)
    except BrokenPipeError:  # `mbml status ... | head`: the reader has gone; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except KeyboardInterrupt:
        if watcher is not None:
            watcher.said.set()
        _say(INTERRUPTED)
        sys.exit(130)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if watcher is not None:
            watcher.close()  # one already woken by a signal goes on: it ends a process stuck at exit


def entry(argv: list[str] | None = None) -> None:
    """The `mbml` command: `main`, and an interrupted command ends at once, skipping the interpreter's
    normal exit, at which JAX would wait for the jitted chunk still in flight (minutes; the stage
    times are saved and every output is written atomically, so nothing is lost but the wait)."""
    try:
        main(argv)
    except SystemExit as e:
        if e.code == 130:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
            _release_shared_semaphores()
            os._exit(130)
        raise


def _release_shared_semaphores() -> None:
    """Unlink the semaphores of a `--workers` run's process pool, as the interpreter's exit would:
    skipped, multiprocessing's resource tracker unlinks them itself and prints a warning per leak
    after the interrupt hint. (Only finalizers of multiprocessing objects run; nothing waits on JAX.)"""
    if "multiprocessing.util" in sys.modules:
        try:
            sys.modules["multiprocessing.util"]._run_finalizers(0)
        except Exception:  # best effort: the process is ending
            pass


if __name__ == "__main__":
    entry()
