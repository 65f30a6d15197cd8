"""The `mbml` command line (tyro on frozen dataclasses)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro

from mbml.errors import MbmlError
from mbml.orchestrate import (INTERRUPT_GRACE, INTERRUPTED, Bars as _Bars, Watcher as _Watcher,  # noqa: F401
                              _release_shared_semaphores, _say, _terminated, run_pipeline)
from mbml.status import read_record

Stage = Literal["collect", "teachers", "ensembles", "distill", "evaluate", "report"]


@dataclass(frozen=True)
class Demo:
    """Every stage on the 2-D navigation toy (point-nav): datasets, teachers, ensembles, students, report."""

    out: Path = Path("runs/demo")
    """Run folder (created if missing; an existing one is continued)."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds; each runs the whole pipeline."""
    methods: tuple[str, ...] = ("full", "neither")
    """Methods to train: MBML full, no_relabel, no_triplet, neither, gt_relabel; baselines contextual_bcq, batch_pearl, focal; all: every one."""
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
    """Methods to train: MBML full, no_relabel, no_triplet, neither, gt_relabel; baselines contextual_bcq, batch_pearl, focal; all: every one."""
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
class EvaluateCmd(STAGE_CMDS["evaluate"]):
    protocol: Literal["online", "online-last", "nonprior", "offline-context"] = "online"
    """Protocol: online (the paper's, episodes 3-5), online-last (PEARL's: episode 5 of the same episodes),
    nonprior (CSRO's: a first episode of random actions), offline-context (FOCAL's: context drawn from
    a dataset of the task; needs `mbml collect-test` first). Another than online adds its scores to a
    finished run folder without retraining."""


EvaluateCmd.__doc__ = STAGE_DOCS["evaluate"] + " --protocol adds another protocol's scores."
STAGE_CMDS["evaluate"] = EvaluateCmd


@dataclass(frozen=True)
class CollectTest:
    """Datasets on the test (and out-of-distribution) tasks, collected by the run's own collector, for
    `mbml evaluate --protocol offline-context`. It costs about (test tasks / training tasks) of the
    collect stage's time; `timings.json` records it as collect_test."""

    out: Path
    """Run folder made by `mbml run` or `mbml demo`."""
    seeds: tuple[int, ...] | None = None
    """Seeds (default: those recorded in the run folder)."""
    force: bool = False
    """Collect again even if done."""
    quiet: bool = False
    """No progress bars."""


@dataclass(frozen=True)
class MarginSweep:
    """The triplet-margin sweep (paper appendix, Fig. 11): the run's student distilled again with each
    margin from its own data, teachers and relabelling, scored on the training and test tasks."""

    out: Path
    """Run folder with teachers (and reward ensembles, for full)."""
    margins: tuple[float, ...] = (0.0, 2.0, 4.0, 8.0)
    """Triplet margins (the run's own reuses its student)."""
    method: str = "full"
    """MBML student with a triplet loss: full, no_relabel or gt_relabel."""
    seeds: tuple[int, ...] | None = None
    """Seeds (default: those recorded in the run folder)."""
    force: bool = False
    """Distil and score again even if done."""
    quiet: bool = False
    """No progress bars."""


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


@dataclass(frozen=True)
class Compare:
    """Methods side by side from run folders' results: seeds, 95% intervals, IQM, P(better), curves."""

    runs: tyro.conf.Positional[tuple[Path, ...]]
    """Run folders (or their results.json) of one family and preset."""
    out: Path = Path("runs/compare")
    """Folder for compare.md, compare.json and the figures."""
    reference: str | None = None
    """Method the others are measured against (default: full, else the first)."""
    allow_mixed: bool = False
    """Compare runs of different families or presets too (their scores are not comparable)."""


@dataclass(frozen=True)
class Transfer:
    """Online SAC on one unseen task, started from a trained student, against the same SAC from scratch and
    plain SAC, at the same env-step budget (paper Fig. 8). Writes RUN/transfer/NAME (resumable)."""

    out: Path
    """Run folder with the method's trained student (made by `mbml run` or `mbml demo`)."""
    task: str
    """The task: test:I, train:I or ood:I (of the family's splits), parameters (1.3; 0.5,1.0), or a .json file."""
    method: str = "full"
    """The MBML student to start from: full, no_relabel, no_triplet, neither, gt_relabel."""
    seeds: tuple[int, ...] = ()
    """Seeds of the run whose students are transferred, one transfer each (default: every seed folder)."""
    steps: int | None = None
    """Env steps on the task per arm, the student's own episodes included (default: the preset's)."""
    set: tuple[str, ...] = ()
    """Changes to the preset's transfer settings, e.g. transfer.eval_every=500 transfer.arms=student,scratch."""
    name: str | None = None
    """Folder name under RUN/transfer (default METHOD-TASK, e.g. full-test0)."""
    force: bool = False
    """Start the folder again from nothing."""
    quiet: bool = False
    """No progress bars."""


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


def _evaluate_protocol(cmd) -> None:
    """`mbml evaluate --protocol P` (P other than online): P's scores for the folder's trained methods,
    added to its report when it has one."""
    from mbml import methods as M
    from mbml.lock import FolderLock
    from mbml.pipeline import Run
    from mbml.report import write_report

    recorded = read_record(cmd.out)
    run = Run.open(cmd.out, create=False)
    seeds = cmd.seeds or tuple(recorded.get("seeds", [0]))
    methods = cmd.methods or tuple(recorded.get("methods", ["full", "neither"]))
    for seed in seeds:
        for m in methods:
            run.require(seed, M.get(m).step)
        if cmd.protocol == "offline-context":
            run.require_split_data(seed)
    with FolderLock(cmd.out):
        for seed in seeds:
            for m in methods:
                print(f"  seed {seed} {m}: {cmd.protocol} protocol", file=sys.stderr, flush=True)
                run.evaluate_protocol(seed, m, cmd.protocol, cmd.force)
        if (cmd.out / "results.json").exists():
            res = write_report(run, tuple(recorded.get("seeds", seeds)), tuple(recorded.get("methods", methods)))
            _summary(res, cmd.out)


def _collect_test(cmd: CollectTest) -> None:
    """`mbml collect-test`: every non-training split's datasets, per seed, with the run's collector."""
    from mbml import io
    from mbml.lock import FolderLock
    from mbml.pipeline import Run

    run = Run.open(cmd.out, create=False)
    if run.cfg.family is None:
        raise MbmlError(f"{cmd.out} has no family (imported data): there is no simulator to collect test tasks with")
    seeds = cmd.seeds or tuple(read_record(cmd.out).get("seeds", [0]))
    for seed in seeds:
        run.require(seed, "collect")
    bars = _Bars(cmd.quiet)
    run.progress = bars
    try:
        with FolderLock(cmd.out):
            for seed in seeds:
                for split, tasks in run.splits()[1:]:
                    run.collect_split(seed, split, cmd.force)
                    path = run.seed_dir(seed) / "timings.json"
                    times = io.read_json(path) if path.exists() else {}
                    print(f"  seed {seed} {split}: {len(tasks)} tasks collected in {times.get(f'collect_{split}', 0):.0f} s "
                          f"(training tasks: {times.get('collect', 0):.0f} s)", file=sys.stderr)
    finally:
        bars.close()


def _execute(cmd) -> None:
    if isinstance(cmd, (ExportMinari, ImportMinari)):
        _minari_cmd(cmd)
    elif isinstance(cmd, CollectTest):
        _collect_test(cmd)
    elif isinstance(cmd, MarginSweep):
        from mbml.margin_sweep import markdown, run_sweep

        bars = _Bars(cmd.quiet)
        try:
            res = run_sweep(cmd.out, cmd.method, cmd.margins, cmd.seeds, cmd.force, progress=bars)
        finally:
            bars.close()
        print("\n".join(markdown(res)))
        print(f"\nsweep: {cmd.out / 'margin_sweep' / 'results.json'}  figure: {cmd.out / 'figures' / 'margin_sweep.png'}",
              file=sys.stderr)
    elif isinstance(cmd, Status):
        from mbml.status import status_lines

        if (cmd.run is None) == (cmd.out is None):
            raise MbmlError("give the run folder once: `mbml status RUN` or `mbml status --out RUN`")
        print("\n".join(status_lines(cmd.run or cmd.out)))
    elif isinstance(cmd, Compare):
        from mbml import compare

        results = compare.load(cmd.runs)
        compare.check_comparable(results, cmd.allow_mixed)
        compare.write(results, cmd.out, cmd.reference)
        print((cmd.out / "compare.md").read_text().split("\n## Runs")[0].rstrip())
        print(f"\ncomparison: {cmd.out / 'compare.md'}", file=sys.stderr)
    elif getattr(cmd, "protocol", "online") not in ("online", "online-last"):
        _evaluate_protocol(cmd)
    elif isinstance(cmd, Transfer):
        from mbml.transfer_run import transfer

        bars = _Bars(cmd.quiet)
        try:
            folder = transfer(cmd.out, cmd.method, cmd.task, cmd.seeds, cmd.steps, cmd.set, cmd.name, cmd.force,
                              progress=bars)
        finally:
            bars.close()
        print((folder / "transfer.md").read_text().split("![")[0].rstrip())
        print(f"\ntransfer: {folder / 'transfer.md'}", file=sys.stderr)
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
        from mbml.data import read_meta
        from mbml.pipeline import first_dataset
        from mbml.run_folder import _read_config

        saved = cmd.out / "config.json"
        cfg = None
        recorded = read_record(cmd.out)
        family = cmd.family
        if saved.exists():
            cfg = _read_config(saved)  # the folder's own config (sections added since: its preset's), not today's preset
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


def main(argv: list[str] | None = None) -> None:
    import tyro

    commands = {"demo": Demo, "run": RunCmd, **STAGE_CMDS, "export-minari": ExportMinari,
                "import-minari": ImportMinari, "status": Status, "compare": Compare,
                "transfer": Transfer, "collect-test": CollectTest, "margin-sweep": MarginSweep}
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


if __name__ == "__main__":
    entry()
