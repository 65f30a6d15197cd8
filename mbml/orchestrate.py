"""Running a command's stages: the seed pool, progress, and what Ctrl-C or `kill` does midway.

`run_pipeline` runs the stages of every seed (one process, or a pool of seed processes with
--workers) with a lock on the run folder; `Bars` shows progress; `Watcher` ends a process whose main
thread is stuck in a long jitted chunk when it is interrupted, after saving the stages' times.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

from mbml.errors import MbmlError
from mbml.status import hms, read_record


class Bars:
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


def expand_methods(methods) -> tuple[str, ...]:
    """`all` stands for every registered method (the MBML variants, then the baselines)."""
    from mbml.methods import REGISTRY

    return tuple(m2 for m in methods for m2 in (REGISTRY if m == "all" else (m,)))


def _check(methods, seeds, workers: int = 0, stages=()):
    import numbers

    from mbml import methods as M

    for m in methods:
        M.get(m)
    if len(set(methods)) != len(methods):
        raise MbmlError(f"methods repeat: {list(methods)}")
    if not methods and {"distill", "evaluate", "report"} & set(stages):
        raise MbmlError(f"give at least one method (--methods): {M.help_text()}")
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
    Watcher(hint=False)  # and end within the grace period even inside a long jitted chunk (the parent says why)

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


def reported_methods(run, seeds, methods) -> list[str]:
    """The methods a run's report shows, in the order the folder records them (`run.record` has added
    `methods`): those just run, and every other one evaluated on all of `seeds` (a method added to a
    finished run joins the others in the report)."""
    from mbml.steps import done_marker

    return [m for m in read_record(run.out).get("methods", [])
            if m in methods or all((run.seed_dir(s) / done_marker("evaluate", m)).exists() for s in seeds)]


def run_pipeline(out: Path, family: str, preset: str, seeds, methods, force=False, quiet=False, lift="auto",
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

    methods = expand_methods(methods)
    _check(methods, seeds, workers, stages)
    if cfg is None:
        cfg = override(dataclasses.replace(get_preset(family, preset), lift=lift), overrides)
    simulated = [s for s in stages if s not in OFFLINE_STAGES]
    if cfg.family is None and simulated:
        raise MbmlError(f"`mbml {simulated[0]}` needs a simulator, and {out} has no family (its data were imported "
                        f"without --family): only {' and '.join(f'`mbml {s}`' for s in OFFLINE_STAGES)} run on it")
    lock = FolderLock(out)  # one writer per run folder (the seed processes of --workers write for this one)
    bars = Bars(quiet)
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
            return write_report(run, list(seeds), reported_methods(run, seeds, methods))
    finally:
        bars.close()
        lock.release()
    return None


def _terminated(signum, frame):
    raise KeyboardInterrupt


INTERRUPTED = "mbml: interrupted; run the same command again to continue from the last checkpoint"
INTERRUPT_GRACE = 5.0
"""Seconds the main thread gets to stop cleanly after Ctrl-C or SIGTERM before `_Watcher` ends the process."""


class Watcher:
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


def _release_shared_semaphores() -> None:
    """Unlink the semaphores of a `--workers` run's process pool, as the interpreter's exit would:
    skipped, multiprocessing's resource tracker unlinks them itself and prints a warning per leak
    after the interrupt hint. (Only finalizers of multiprocessing objects run; nothing waits on JAX.)"""
    if "multiprocessing.util" in sys.modules:
        try:
            sys.modules["multiprocessing.util"]._run_finalizers(0)
        except Exception:  # best effort: the process is ending
            pass
