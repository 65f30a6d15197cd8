"""Killing `mbml run` (SIGKILL, no clean-up) in the middle of a stage and running the same command
again continues from what was finished and ends with valid outputs. (That a resumed stage gives the
same numbers as an uninterrupted one is tested in test_pipeline.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ARGS = ["run", "--family", "point-nav", "--preset", "smoke", "--seeds", "0", "--methods", "full"]


def mbml(out: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mbml.cli", *ARGS, "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    t0 = time.monotonic()
    while not path.exists():
        assert proc.poll() is None, f"mbml ended before {path.name} appeared: {proc.stderr.read()}"
        assert time.monotonic() - t0 < timeout, f"{path} did not appear"
        time.sleep(0.05)


def test_sigkill_mid_stage_then_rerun(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = tmp_path / "run"
    proc = mbml(out, env)
    # the dataset is written: the run is now in the teachers stage (or later); kill it without warning
    wait_for(out / "seed_0" / "data" / "meta.json", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "results.json").exists()

    rerun = mbml(out, env)
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err
    results = json.loads((out / "results.json").read_text())
    assert set(results["methods"]) == {"full"}
    assert (out / "report.md").exists()
    assert not list((out / "seed_0" / "ckpt").glob("*")), "finished stages leave no checkpoints"



def test_finished_stage_removes_leftover_checkpoint(tmp_path):
    """A kill after a stage wrote its outputs but before it removed its checkpoint (or heartbeat)
    leaves them behind; the next run skips the finished stage and removes them."""
    from mbml.config import preset
    from mbml.pipeline import Run

    run = Run.open(tmp_path / "run", preset("point-nav", "smoke"))
    run.collect(0)
    leftover = run.seed_dir(0) / "ckpt" / "collect.msgpack"
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_bytes(b"stale")
    beat = leftover.with_name("collect.seconds.json")  # a heartbeat, as a kill before its removal leaves it
    beat.write_text('{"seconds": 5.0}')
    tmp = leftover.with_name(".collect.mid.pkl.abc123")  # a kill during a snapshot's atomic write
    tmp.write_bytes(b"half")
    meta = (run.seed_dir(0) / "data" / "meta.json").read_bytes()
    timings = json.loads((run.seed_dir(0) / "timings.json").read_text())
    run.collect(0)
    assert not leftover.exists() and not beat.exists() and not tmp.exists()
    assert json.loads((run.seed_dir(0) / "timings.json").read_text()) == timings  # already counted there

    (run.seed_dir(0) / "timings.json").write_text("{}")  # killed before the time reached timings.json
    beat.write_text('{"seconds": 5.0}')
    run.collect(0)
    assert json.loads((run.seed_dir(0) / "timings.json").read_text()) == {"collect": 5.0} and not beat.exists()
    assert (run.seed_dir(0) / "data" / "meta.json").read_bytes() == meta  # the stage was skipped, not redone


def test_stage_time_counts_interrupted_attempts(tmp_path, monkeypatch):
    """A running stage writes its time so far every heartbeat; an attempt resumed after a kill
    starts from it, so timings.json counts the interrupted attempt too (less one heartbeat)."""
    from mbml.config import preset
    from mbml.pipeline import Run

    monkeypatch.setattr(Run, "HEARTBEAT", 0.05)
    run = Run.open(tmp_path / "run", preset("point-nav", "smoke"))
    sidecar = run.seed_dir(0) / "ckpt" / "teachers.seconds.json"
    t0 = time.perf_counter()
    with run.timed(0, "teachers"):
        time.sleep(0.3)
        seconds, deadline = 0.0, time.perf_counter() + 30  # a loaded machine may delay the beat thread
        while seconds < 0.04 and time.perf_counter() < deadline:
            seconds = json.loads(sidecar.read_text())["seconds"]
            time.sleep(0.01)
        assert 0.04 <= seconds <= time.perf_counter() - t0  # a heartbeat, while running: time so far
    first = json.loads((run.seed_dir(0) / "timings.json").read_text())["teachers"]
    assert 0.3 <= first < 5 and not sidecar.exists()  # finished: counted once, the sidecar removed

    sidecar.write_text(json.dumps({"seconds": 100.0}))  # as an attempt killed after 100 s leaves it
    with run.timed(0, "teachers"):
        pass
    total = json.loads((run.seed_dir(0) / "timings.json").read_text())["teachers"]
    assert 100 + first <= total < 100 + first + 1


def test_checkpoints_carry_a_progress_file(tmp_path):
    import numpy as np

    from mbml.train_loop import progress_file, remove_checkpoint, run_chunks

    ckpt = tmp_path / "ckpt" / "teachers.msgpack"
    ckpt.parent.mkdir()
    carry = run_chunks({"x": np.zeros(2)}, 7, 3, lambda c, done, n: {"x": c["x"] + n}, ckpt)
    assert carry["x"].tolist() == [7.0, 7.0]
    assert json.loads(progress_file(ckpt).read_text()) == {"done": 7, "total": 7}
    remove_checkpoint(ckpt)
    assert not ckpt.exists() and not progress_file(ckpt).exists()


def test_sigterm_stops_like_ctrl_c_and_keeps_the_stage_time(tmp_path):
    """`kill PID` (SIGTERM): a one-line hint, exit 130, and the running stage's time kept to the
    second beside its checkpoint."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = tmp_path / "run"
    proc = mbml(out, env)
    wait_for(out / "seed_0" / "data" / "meta.json", proc)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "run the same command again" in err.strip().splitlines()[-1]
    kept = {p.name: json.loads(p.read_text())["seconds"] for p in (out / "seed_0" / "ckpt").glob("*.seconds.json")}
    assert kept and all(v > 0 for v in kept.values()), kept  # the stage it was in (teachers, or a later one)
    # a resumed attempt starts from this time: test_stage_time_counts_interrupted_attempts


STUCK = """
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

from mbml import cli
from mbml.config import preset
from mbml.pipeline import Run


def stuck(cmd):  # a stage whose one jitted chunk would run for hours
    run = Run.open(Path(sys.argv[1]), preset("point-nav", "smoke"))
    with run.timed(0, "teachers"):
        chunk = jax.jit(lambda x: jax.lax.fori_loop(0, 10**9, lambda i, x: jnp.tanh(x @ x), x))
        y = chunk(jnp.ones((128, 128)) / 128)
        print("started", flush=True)
        float(y.sum())  # the main thread waits here, in XLA, out of Python's reach


cli._execute = stuck
cli.entry(["status", sys.argv[1]])
"""


def test_sigterm_inside_a_long_jitted_chunk_ends_the_process(tmp_path):
    """A Python signal handler cannot run while the main thread waits on XLA; the interrupt watcher
    ends the process a few seconds after SIGTERM anyway, with the hint, exit 130 and the stage time."""
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", STUCK, str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "started", proc.stderr.read()
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)  # the chunk alone would take hours
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "run the same command again" in err.strip().splitlines()[-1]
    kept = json.loads((out / "seed_0" / "ckpt" / "teachers.seconds.json").read_text())["seconds"]
    assert kept >= 1.0  # written at the end, not only the heartbeat at the start (0 s)


AFTER_MAIN = """
import atexit
import os
import signal
import sys
import time

from mbml import cli


def interrupted(cmd):
    os.kill(os.getpid(), signal.SIGTERM)  # a real signal: it wakes the watcher too
    time.sleep(5)


cli._execute = interrupted
if sys.argv[1] == "hang-at-exit":  # as JAX waiting for work in flight at exit
    atexit.register(time.sleep, 600)
if sys.argv[1] == "hang-at-exit":  # the `mbml` command
    cli.entry(["status", "x"])
try:
    cli.main(["status", "x"])
except SystemExit as e:
    print("main exited", e.code, flush=True)
if sys.argv[1] == "caller-goes-on":
    time.sleep(cli.INTERRUPT_GRACE + 3)
    print("caller still alive", flush=True)
"""


def test_an_interrupted_command_skips_a_stuck_exit_and_a_caller_of_main_goes_on():
    """`mbml` (cli.entry) ends an interrupted command at once, without the interpreter's exit (where
    JAX would wait for a chunk in flight; here an atexit handler sleeping 600 s); a program that calls
    cli.main and goes on after its SystemExit is not ended by the interrupt watcher."""
    stuck = subprocess.run([sys.executable, "-c", AFTER_MAIN, "hang-at-exit"], capture_output=True,
                           text=True, timeout=120)
    assert stuck.returncode == 130, stuck.stderr
    assert stuck.stderr.count("run the same command again") == 1, stuck.stderr
    caller = subprocess.run([sys.executable, "-c", AFTER_MAIN, "caller-goes-on"], capture_output=True,
                            text=True, timeout=120)
    assert caller.returncode == 0, caller.stderr
    assert caller.stdout.split("\n")[:2] == ["main exited 130", "caller still alive"]


def test_the_watcher_ends_the_process_when_stderr_is_gone(tmp_path):
    """`mbml run ... | tee log`, then Ctrl-C: tee is gone, the hint cannot be printed; still exit."""
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", STUCK, str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "started"
        proc.stderr.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 130
    finally:
        proc.kill()
    assert (out / "seed_0" / "ckpt" / "teachers.seconds.json").exists()


def test_sigterm_with_workers_stops_every_seed_process_and_keeps_their_times(tmp_path):
    """`--workers 2`: SIGTERM to `mbml` while both seed processes train their teachers ends every
    process (the seeds' and the pool's) with the hint and exit 130, and each seed keeps its stage time."""
    import psutil

    out = tmp_path / "run"
    args = ["run", "--family", "point-nav", "--preset", "smoke", "--seeds", "0", "1", "--methods", "full",
            "--workers", "2", "--set", "bcq.steps=1000000", "bcq.eval_every=1000000", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "mbml.cli", *args], env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for seed in (0, 1):  # each seed's teachers stage has started (its first heartbeat), one chunk for hours
            wait_for(out / f"seed_{seed}" / "ckpt" / "teachers.seconds.json", proc)
        time.sleep(1.0)  # so each stage has run at least 1 s when the signal comes
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 2, children  # the seed workers (and the progress queue's manager)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "run the same command again" in err.strip().splitlines()[-1], err
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], alive
    for seed in (0, 1):
        kept = json.loads((out / f"seed_{seed}" / "ckpt" / "teachers.seconds.json").read_text())["seconds"]
        assert kept >= 1.0, (seed, kept)
