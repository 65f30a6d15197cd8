"""`mbml sweep`: the grid's jobs, its refusals before anything starts, and sweeps on a local Ray, on a
Ray head started with `ray start --head`, and with a worker killed mid-job."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mbml.errors import MbmlError
from mbml.sweep import folder_name, plan, sweep

ray = pytest.importorskip("ray")

GRID = dict(families=("point-nav", "umaze-goal"), presets=("smoke",), methods=("full", "contextual_bcq"),
            seeds=(0, 1))


def mbml(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mbml.cli", *map(str, args)], capture_output=True, text=True, **kw)


def test_plan_has_a_shared_job_per_seed_then_one_job_per_method():
    jobs = plan(("point-nav",), ("smoke",), ("full", "contextual_bcq"), (0, 1))
    assert [j.name for j in jobs] == [
        "point-nav-smoke seed 0 shared", "point-nav-smoke seed 0 full", "point-nav-smoke seed 0 contextual_bcq",
        "point-nav-smoke seed 1 shared", "point-nav-smoke seed 1 full", "point-nav-smoke seed 1 contextual_bcq"]
    shared, full, cbcq = jobs[:3]
    assert shared.steps == ("collect", "teachers", "ensembles", "references")  # full needs teachers and ensembles
    assert full.steps == ("distill_full", "evaluate_full")
    assert cbcq.steps == ("train_contextual_bcq", "evaluate_contextual_bcq")
    # a grid of baselines alone needs no teachers or ensembles
    assert plan(("point-nav",), ("smoke",), ("contextual_bcq",), (0,))[0].steps == ("collect", "references")


@pytest.mark.parametrize("change, says", [
    (dict(families=("nope",)), "unknown family"),
    (dict(presets=("huge",)), "unknown preset"),
    (dict(methods=("full", "magic")), "magic"),
    (dict(families=("umaze-goal",), presets=("demo",)), "preset 'demo' is for point-nav"),
    (dict(seeds=(0, 0)), "seeds repeat"),
    (dict(families=()), "--families"),
])
def test_bad_grids_are_refused_before_anything_is_written(tmp_path, change, says):
    out = tmp_path / "sweep"
    with pytest.raises(MbmlError, match=says):
        sweep(out, **{**GRID, **change})
    assert not out.exists()


def test_an_unreachable_address_is_one_line_and_writes_nothing(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "sweep"
    t0 = time.monotonic()
    got = mbml("sweep", "--families", "point-nav", "--out", out, "--address", f"127.0.0.1:{port}")
    assert got.returncode == 2
    assert got.stderr.strip().splitlines() == [
        f"mbml: error: --address 127.0.0.1:{port}: no Ray head answers there ([Errno 111] Connection refused); "
        "start one with `ray start --head`, or leave --address out to start Ray on this machine"]
    assert time.monotonic() - t0 < 60
    assert not out.exists()


def test_a_job_asking_for_gpus_no_node_has_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "sweep"
    got = mbml("sweep", "--families", "point-nav", "--out", out, "--gpus-per-job", "1", "--cpus", "1")
    assert got.returncode == 2
    assert got.stderr.strip().splitlines()[-1] == ("mbml: error: --gpus-per-job 1: no node of the Ray cluster has "
                                                   "that many GPUs (the most is 0)")
    assert not out.exists()


def test_a_sweep_folder_of_another_grid_is_refused_and_kept(tmp_path):
    out = tmp_path / "sweep"
    out.mkdir()
    grid = {"grid": {"families": ["point-nav"], "presets": ["smoke"], "methods": ["full"], "seeds": [0]}}
    (out / "sweep.json").write_text(json.dumps(grid))
    with pytest.raises(MbmlError, match=r"another grid \(methods: \['full'\] there, \['full', 'neither'\] now\)"):
        sweep(out, ("point-nav",), ("smoke",), ("full", "neither"), (0,))
    assert json.loads((out / "sweep.json").read_text()) == grid


def test_a_job_whose_worker_cannot_see_the_run_folder_says_so(tmp_path):
    from mbml.sweep import run_job

    with pytest.raises(MbmlError, match=rf"cannot see the run folder {tmp_path / 'elsewhere'}: every node needs"):
        run_job(str(tmp_path / "elsewhere"), 0, ("collect",), ("full",), False)


def test_job_states_and_the_live_table_of_a_large_grid(tmp_path):
    from rich.console import Console

    from mbml.sweep import _table, job_states

    jobs = plan(("point-nav", "umaze-goal"), ("smoke",), ("full", "neither"), (0, 1, 2))
    rows = job_states(tmp_path, jobs, {jobs[0].name: "done", jobs[1].name: "the worker on h cannot see it"})
    assert [r["state"] for r in rows[:3]] == ["done", "failed", "pending"]
    assert rows[1]["doing"] == "the worker on h cannot see it"
    console = Console(width=200, record=True)
    console.print(_table(rows, limit=10))
    shown = console.export_text()
    assert "mbml sweep: 1 done, 1 failed, 16 pending" in shown
    assert jobs[1].name in shown and jobs[2].name not in shown and "and 17 jobs done or pending" in shown


def scores(out: Path, folder: str) -> dict:
    """Per seed and method, the test split's per-task scores (what a sweep must reproduce)."""
    found = {}
    for f in sorted((out / folder).glob("seed_*/eval/*.json")):
        if f.stem != "references":
            found[(f.parent.parent.name, f.stem)] = json.loads(f.read_text())["test"]
    return found


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sweep") / "local"
    got = mbml("sweep", "--families", *GRID["families"], "--presets", *GRID["presets"], "--methods", *GRID["methods"],
               "--seeds", *GRID["seeds"], "--out", out, "--quiet", timeout=1800)
    assert got.returncode == 0, got.stderr
    return out


@pytest.mark.slow
def test_a_sweep_on_a_local_ray_writes_every_run_and_the_comparisons(local_sweep):
    out = local_sweep
    for family in GRID["families"]:
        name = folder_name(family, "smoke")
        res = json.loads((out / name / "results.json").read_text())
        assert set(res["methods"]) == set(GRID["methods"]) and res["seeds"] == [0, 1]
        assert (out / "compare" / name / "compare.md").exists()
        assert set(scores(out, name)) == {(f"seed_{s}", m) for s in GRID["seeds"] for m in GRID["methods"]}
    md = (out / "sweep.md").read_text()
    assert "## `point-nav-smoke`" in md and "## `umaze-goal-smoke`" in md and "## Runs" in md
    log = (out / "sweep.log").read_text()
    assert log.count(": done in ") == len(plan(*GRID.values())) == 12
    status = mbml("status", out)
    assert status.returncode == 0 and "12 done" in status.stdout.splitlines()[0]


@pytest.mark.slow
def test_a_sweep_against_a_ray_head_started_with_ray_start(local_sweep, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray_cli = Path(sys.executable).with_name("ray")
    # the cluster's token, given to the head and to the driver alike (docs/sweep.md, "On a cluster")
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": os.urandom(16).hex()}
    head = subprocess.Popen([str(ray_cli), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                             "--num-cpus", "2", "--include-dashboard", "false", "--block"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        out = tmp_path / "sweep"
        got = mbml("sweep", "--families", *GRID["families"], "--presets", *GRID["presets"], "--methods",
                   *GRID["methods"], "--seeds", *GRID["seeds"], "--out", out, "--quiet", "--address",
                   f"127.0.0.1:{port}", timeout=1800, env=env)
        assert got.returncode == 0, got.stderr
    finally:
        head.send_signal(signal.SIGTERM)
        head.wait(120)
    for family in GRID["families"]:  # the same numbers as on the local Ray
        name = folder_name(family, "smoke")
        assert scores(out, name) == scores(local_sweep, name)


def _job_process(name: str):
    import psutil

    for p in psutil.process_iter(["pid", "cmdline"]):
        if any(f"ray::{name}" in part for part in (p.info["cmdline"] or [])):
            return p
    return None


@pytest.mark.slow
def test_a_worker_killed_mid_job_is_retried_and_resumes_from_its_checkpoint(local_sweep, tmp_path):
    out = tmp_path / "sweep"
    job = "point-nav-smoke seed 0 full"
    proc = subprocess.Popen([sys.executable, "-m", "mbml.cli", "sweep", "--families", "point-nav", "--presets", "smoke",
                             "--methods", *GRID["methods"], "--seeds", "0", "--out", str(out), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    progress = out / "point-nav-smoke" / "seed_0" / "ckpt" / "distill_full.progress.json"
    t0 = time.monotonic()
    while not progress.exists():  # the first checkpoint of the job's training
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() - t0 < 900, "no checkpoint of distill_full appeared"
        time.sleep(0.05)
    victim = _job_process(job)
    assert victim is not None, f"no process titled ray::{job}"
    os.kill(victim.pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err
    log = (out / "sweep.log").read_text()
    line = next(row for row in log.splitlines() if f"{job}: done" in row)
    resumed = line.split("distill_full resumed at ")[1].split("/")
    assert 0 < int(resumed[0]) < int(resumed[1])  # the retry started from the checkpoint, not from step 0
    name = folder_name("point-nav", "smoke")
    assert scores(out, name) == {k: v for k, v in scores(local_sweep, name).items() if k[0] == "seed_0"}
