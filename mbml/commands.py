"""The `mbml` commands' options: one frozen dataclass per command, read by tyro (field docstrings are
the help text). `mbml.cli` runs them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro

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
    lift: Literal["auto", "vmap", "map"] = "auto"
    """Lift per-task learners over the task axis with vmap (parallel), lax.map (sequential), or auto: vmap on GPUs and for small nets on CPUs, lax.map for wide nets on CPUs (a run folder made with another keeps its own)."""
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
    """How far a run folder is: each seed's stages, done / running / stopped / pending, with times (a
    sweep folder: each job's)."""

    run: tyro.conf.Positional[Path | None] = None
    """Run folder made by `mbml run` or `mbml demo`, or a sweep folder (or give it as --out)."""
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


@dataclass(frozen=True)
class Sweep:
    """A grid of families x presets x methods x seeds as Ray tasks, on this machine or a Ray cluster
    (`pip install -e ".[ray]"`): one run folder per family and preset under OUT, then a comparison of each
    and OUT/sweep.md. Rerun the same command to continue a stopped sweep."""

    families: tuple[str, ...] = ("point-nav",)
    """Task families: point-nav, ant-dir, ant-goal, halfcheetah-vel, humanoid-dir, walker-param, umaze-goal."""
    presets: tuple[str, ...] = ("smoke",)
    """Budget presets: smoke, demo (point-nav only), cpu or paper."""
    methods: tuple[str, ...] = ("full", "neither")
    """Methods to train: MBML full, no_relabel, no_triplet, neither, gt_relabel; baselines contextual_bcq, batch_pearl, focal; all: every one."""
    seeds: tuple[int, ...] = (0,)
    """Seeds; each runs every stage of every run folder."""
    out: Path = Path("runs/sweep")
    """Sweep folder: its run folders FAMILY-PRESET, sweep.json (the grid), sweep.md, compare/."""
    address: str | None = None
    """Ray head to join (HOST:PORT from `ray start --head`, or auto); default: start Ray on this machine."""
    cpus: int | None = None
    """CPUs of the Ray started on this machine (default: all)."""
    cpus_per_job: float = 1.0
    """CPUs each job holds (Ray runs as many jobs at once as the CPUs allow)."""
    gpus_per_job: float = 0.0
    """GPUs each job holds: 1 on GPU machines, or a fraction to share one (0.25: four jobs a GPU)."""
    retries: int = 3
    """Times Ray retries a job whose worker died; each retry resumes from the job's checkpoints."""
    force: bool = False
    """Redo stages that are already done."""
    quiet: bool = False
    """No live table; a line per finished job only."""
