"""A failed command changes nothing: every sub-command, run into each failure it can meet, prints one
line `mbml: error: ...`, exits with status 2, shows no traceback, and leaves everything on disk byte
for byte as it was (the names and bytes of every file and the names of every folder under the test's
folder: the run folder, its run.json and config.json, datasets, a Minari root).

The folders are made without training: stage outputs that a failing command never reads are empty
stand-ins (the command checks what it needs before it writes or loads anything heavy).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mbml import data as D, io
from mbml.config import override, preset
from mbml.pipeline import Run
from test_cli import assert_one_line_error, run_cli

SMOKE = preset("point-nav", "smoke")


def tree(folder: Path, snapshot) -> tuple[dict[str, bytes], set[str]]:
    """(every file's relative path -> bytes, every folder's relative path) under `folder`."""
    return snapshot(folder), {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_dir()}


def run_folder(out: Path, cfg=SMOKE, methods=("full", "neither")) -> Path:
    Run.open(out, cfg).record([0], list(methods))
    return out


def with_data(out: Path, make_dataset, n: int = 128, obs_dim: int = 2, **kw) -> Path:
    """A run folder with a valid seed-0 dataset: point-nav sizes, and 128 transitions per task (the
    smoke preset's largest batch)."""
    run_folder(out, **kw)
    D.save(make_dataset(k=2, n=n, obs_dim=obs_dim, act_dim=2, extras=False), out / "seed_0" / "data")
    return out


def stand_ins(out: Path, *names: str) -> Path:
    """Empty stand-ins for stage outputs (paths relative to seed_0)."""
    for name in names:
        (out / "seed_0" / name).parent.mkdir(parents=True, exist_ok=True)
        (out / "seed_0" / name).write_bytes(b"{}")
    return out


TEACHERS = ("teachers.json", "teachers.msgpack")
STUDENTS = (*TEACHERS, "relabel.json", "relabel.npz", "students/full.msgpack")


def setup(kind: str, out: Path, make_dataset) -> None:
    """Make the folder `out` of the given kind (and an empty Minari root beside it)."""
    (out.parent / "minari").mkdir()
    if kind == "none":
        return
    if kind == "new":
        run_folder(out)
    elif kind == "data":
        with_data(out, make_dataset)
    elif kind == "few-transitions":
        with_data(out, make_dataset, n=64)
    elif kind == "wide-obs":
        with_data(out, make_dataset, obs_dim=5)
    elif kind == "corrupt":
        with_data(out, make_dataset)
        f = out / "seed_0" / "data" / "rewards.npy"
        f.write_bytes(f.read_bytes()[:-40])
    elif kind == "teachers":
        stand_ins(with_data(out, make_dataset), *TEACHERS)
    elif kind == "students":  # a full student, no neither one: run.json records full only
        stand_ins(with_data(out, make_dataset, methods=("full",)), *STUDENTS)
    elif kind == "evaluated":
        stand_ins(with_data(out, make_dataset, methods=("full",)), *STUDENTS, "eval/full.json",
                  "eval/references.json")
    elif kind == "set":  # made with --set
        run_folder(out, cfg=override(SMOKE, ["distill.steps=300"]))
    elif kind == "bad-config":  # config.json edited by hand out of range
        run_folder(out)
        stored = io.read_json(out / "config.json")
        stored["bcq"]["steps"] = -5
        (out / "config.json").write_text(json.dumps(stored))
    elif kind == "bad-run-json":
        run_folder(out)
        (out / "run.json").write_text(json.dumps({"seeds": "0", "methods": ["full"]}))
    elif kind == "negative-seed":  # run.json edited by hand
        with_data(out, make_dataset)
        (out / "run.json").write_text(json.dumps({"seeds": [-1], "methods": ["full"]}))
    elif kind == "config-folder":  # config.json is a folder
        (out / "config.json").mkdir(parents=True)
    elif kind in ("nan-tasks", "float64"):  # arrays rewritten behind the writer's back (meta.json agrees)
        with_data(out, make_dataset)
        data = out / "seed_0" / "data"
        if kind == "nan-tasks":
            tasks = np.load(data / "tasks.npy")
            tasks[1, 0] = np.nan
            np.save(data / "tasks.npy", tasks)
        else:
            np.save(data / "observations.npy", np.load(data / "observations.npy").astype(np.float64))
            meta = io.read_json(data / "meta.json")
            meta["arrays"]["observations"]["dtype"] = "float64"
            (data / "meta.json").write_text(json.dumps(meta))
    else:
        raise ValueError(kind)


CASES = [  # (folder kind, argv with {run} and {root}, fragments of the error)
    # mbml run: bad --set (range and parse), bad names and seeds, a folder of another config or damaged
    ("none", "run --preset smoke --set bcq.steps=-5", ["--set bcq.steps=-5: must be a positive integer"]),
    ("data", "run --preset smoke --set bcq.steps=-5", ["--set bcq.steps=-5: must be a positive integer"]),
    ("none", "run --preset smoke --set sac.gamma=1.5", ["--set sac.gamma=1.5: must be in (0, 1]"]),
    ("none", "run --preset smoke --set distill.q_hidden=64,0", ["distill.q_hidden=64,0", "positive integers"]),
    ("none", "run --preset smoke --set sac.lr=nan", ["--set sac.lr=nan: must be a positive number"]),
    ("none", "run --preset smoke --set ensemble.members=0", ["ensemble.members=0: must be a positive integer (at least 1)"]),
    ("none", "run --preset smoke --set eval.episodes=2", ["eval.score_from=2: must be less than eval.episodes (2)"]),
    ("none", "run --preset smoke --set sac.total_steps=1e999", ["sac.total_steps=1e999: expected an integer"]),
    ("none", "run --preset smoke --set bcq.batch_size=1000", ["bcq.batch_size=1000", "600 transitions per task"]),
    ("none", "run --preset smoke --set sac.critic=resnet", ["sac.critic=resnet: choose one of mlp"]),
    ("none", "run --preset smoke --workers -1", ["--workers -1"]),
    ("none", "run --preset smoke --seeds -1", ["seed -1: seeds are integers from 0"]),
    ("none", "run --preset smoke --seeds 0 0", ["seeds repeat"]),
    ("none", "run --preset smoke --methods full full", ["methods repeat"]),
    ("none", "run --preset smoke --methods", ["give at least one method"]),
    ("none", "run --family ant-dir --preset demo", ["preset 'demo' is for point-nav"]),
    ("data", "run --preset demo", ["different config"]),
    ("set", "run --preset smoke", ["different config", "--set distill.steps=300"]),
    ("bad-config", "run --preset smoke", ["config.json: bcq.steps=-5: must be a positive integer"]),
    ("corrupt", "run --preset smoke", ["rewards.npy", "truncated or corrupt"]),
    ("bad-run-json", "run --preset smoke", ["run.json is not a run record"]),
    ("few-transitions", "run --preset smoke", ["bcq.batch_size=100", "64 transitions per task"]),
    # mbml demo
    ("data", "demo", ["different config"]),
    ("none", "demo --seeds 1 1", ["seeds repeat"]),
    ("none", "demo --methods bogus", ["unknown method 'bogus'"]),
    # stage commands: no run folder, another config, missing inputs, bad names
    ("none", "collect", ["not a run folder"]),
    ("none", "collect --family bogus --preset smoke", ["unknown family 'bogus'"]),
    ("none", "collect --family point-nav --preset huge", ["unknown preset 'huge'"]),
    ("none", "collect --family point-nav --preset smoke --seeds 0 0", ["seeds repeat"]),
    ("data", "collect --family ant-dir", ["holds a 'point-nav' run"]),
    ("bad-config", "collect", ["config.json: bcq.steps=-5"]),
    ("bad-run-json", "collect", ["run.json is not a run record"]),
    ("new", "teachers", ["no dataset"]),
    ("none", "teachers --family point-nav --preset smoke", ["no dataset"]),
    ("corrupt", "teachers", ["rewards.npy"]),
    ("wide-obs", "teachers", ["obs/action sizes 5/2"]),
    ("few-transitions", "teachers", ["bcq.batch_size=100: must be at most the 64 transitions"]),
    ("nan-tasks", "teachers", ["tasks of task 1 holds 1 NaN or infinite"]),
    ("float64", "ensembles", ["observations.npy holds float64; the format stores float32"]),
    ("negative-seed", "teachers", ["seed -1: seeds are integers from 0"]),
    ("config-folder", "teachers", ["cannot read", "config.json"]),
    ("config-folder", "run --preset smoke", ["cannot read", "config.json"]),
    ("data", "teachers --preset demo", ["holds a 'smoke' run"]),
    ("new", "ensembles", ["no dataset"]),
    ("data", "ensembles --seeds 3", ["no dataset in", "seed_3"]),
    ("data", "distill", ["no teachers"]),
    ("teachers", "distill --methods full", ["no relabelling", "mbml ensembles"]),
    ("teachers", "distill --methods bogus", ["unknown method 'bogus'"]),
    ("teachers", "evaluate", ["no full student"]),
    ("new", "distill --methods contextual_bcq", ["no dataset"]),  # a baseline needs only the datasets: those
    ("data", "evaluate --methods batch_pearl", ["no batch_pearl agent", "mbml distill", "--methods batch_pearl"]),
    ("none", "run --preset smoke --methods all full", ["methods repeat"]),
    # compare
    ("none", "compare {run}", ["no ", "results.json", "mbml report"]),
    ("students", "evaluate --methods neither", ["no neither student", "mbml distill", "--methods neither"]),
    ("students", "report", ["no full evaluation", "mbml evaluate"]),
    ("evaluated", "report --methods full neither", ["no neither evaluation"]),
    ("evaluated", "report --seeds 0 1", ["no full evaluation in", "seed_1"]),
    # status
    ("none", "status {run}", ["not a run folder"]),
    ("bad-run-json", "status {run}", ["run.json is not a run record"]),
    ("data", "status {run} --out {run}", ["give the run folder once"]),
    # Minari
    ("new", "export-minari --prefix mbml/x", ["holds no mbml dataset"]),
    ("data", "export-minari --prefix bad!prefix", ["not a Minari namespace"]),
    ("corrupt", "export-minari --prefix mbml/x", ["rewards.npy"]),
    ("data", "import-minari --ids mbml/a-v0 mbml/b-v0", ["already exists"]),
    ("none", "import-minari --ids mbml/a-v0 mbml/b-v0", ["mbml/a-v0 not found"]),
    ("none", "import-minari --ids mbml/a-v0", ["at least 2 tasks"]),
    ("none", "import-minari --ids mbml/a-v0 mbml/a-v0", ["repeat"]),
]


def _argv(text: str, run: Path, root: Path) -> list[str]:
    argv = text.split()
    if "{run}" not in text:
        out = run / "seed_0" / "data" if argv[0] == "import-minari" else run
        argv += ["--out", str(out)]
    if argv[0] in ("export-minari", "import-minari"):
        argv += ["--root", str(root)]
    elif argv[0] not in ("status", "compare"):
        argv += ["--quiet"]
    return [a.format(run=run) for a in argv]


@pytest.mark.parametrize("kind,command,fragments", CASES, ids=[f"{k}: {c}" for k, c, _ in CASES])
def test_a_failed_command_changes_nothing(tmp_path, capsys, snapshot, make_dataset, kind, command, fragments):
    if command.split()[0].endswith("-minari"):
        pytest.importorskip("minari")
    run = tmp_path / "run"
    setup(kind, run, make_dataset)
    before = tree(tmp_path, snapshot)
    code, _, err = run_cli(_argv(command, run, tmp_path / "minari"), capsys)
    assert_one_line_error(code, err, *fragments)
    after = tree(tmp_path, snapshot)
    assert after[1] == before[1], f"folders added or removed: {sorted(after[1] ^ before[1])}"
    assert sorted(after[0]) == sorted(before[0]), f"files added or removed: {sorted(set(after[0]) ^ set(before[0]))}"
    changed = [name for name in before[0] if after[0][name] != before[0][name]]
    assert not changed, f"changed: {changed}"
