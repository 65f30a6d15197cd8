"""The `mbml` command line (tyro on frozen dataclasses)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path

from mbml.commands import (STAGE_CMDS, CollectTest, Compare, Demo, ExportMinari, ImportMinari,  # noqa: F401
                           MarginSweep, RunCmd, Stage, Status, Sweep, Transfer)
from mbml.errors import MbmlError
from mbml.orchestrate import (INTERRUPT_GRACE, INTERRUPTED, Bars as _Bars, Watcher as _Watcher,  # noqa: F401
                              _release_shared_semaphores, _say, _terminated, reported_methods, run_pipeline)
from mbml.status import read_record

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
        if (cmd.out / "results.json").exists():  # the report's methods: those evaluated on every seed
            every = tuple(recorded.get("seeds", seeds))
            res = write_report(run, every, reported_methods(run, every, ()))
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
        from mbml import status, sweep

        if (cmd.run is None) == (cmd.out is None):
            raise MbmlError("give the run folder once: `mbml status RUN` or `mbml status --out RUN`")
        folder = cmd.run or cmd.out
        lines = sweep.status_lines if (folder / sweep.GRID_FILE).exists() else status.status_lines
        print("\n".join(lines(folder)))
    elif isinstance(cmd, Sweep):
        from mbml.sweep import sweep

        summary = sweep(cmd.out, cmd.families, cmd.presets, cmd.methods, cmd.seeds, cmd.address, cmd.cpus,
                        cmd.cpus_per_job, cmd.gpus_per_job, cmd.retries, cmd.force, cmd.quiet)
        print(summary.read_text().split("\n## Runs")[0].rstrip())
        print(f"\nsweep: {summary}", file=sys.stderr)
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
                "transfer": Transfer, "collect-test": CollectTest, "margin-sweep": MarginSweep,
                "sweep": Sweep}
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
