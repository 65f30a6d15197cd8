"""One writer per run folder: a second `mbml` that would write into a folder a live process is writing
is refused in one line naming that process; a lock left by a process that is gone is taken over, one
of another host is respected; `mbml status` reads on; `--workers` seed processes write for their parent."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mbml import cli, data as D
from mbml.lock import LOCK_NAME, FolderLock, writer
from test_cli import assert_one_line_error, run_cli, smoke_folder

HOLD = """
import sys, time
from mbml.lock import FolderLock
FolderLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(120)
"""


@pytest.fixture
def held(tmp_path):
    """A run folder whose lock another live process holds: (folder, that process)."""
    out = smoke_folder(tmp_path / "run")
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield out, proc
    finally:
        proc.kill()
        proc.wait()


def dead_pid() -> int:
    """The pid of a process of this host that has ended."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_lock(folder: Path, host: str, pid: int) -> Path:
    path = folder / LOCK_NAME
    path.write_text(json.dumps({"host": host, "pid": pid, "since": 0.0, "command": "mbml run --out x"}))
    return path


@pytest.mark.parametrize("args", [
    ["teachers"],
    ["run", "--preset", "smoke"],
    ["import-minari", "--ids", "a/t0-v0", "a/t1-v0", "--tasks", "0", "1", "--out", "{out}/seed_0/data"],
])
def test_second_writer_is_refused_naming_the_owner(held, capsys, snapshot, args):
    out, proc = held
    before = snapshot(out)
    argv = [a.format(out=out) for a in args]
    if "--out" not in argv:
        argv += ["--out", str(out), "--quiet"]
    code, _, err = run_cli(argv, capsys)
    assert_one_line_error(code, err, f"{out} is being written by another mbml process", f"pid {proc.pid} on "
                          f"{socket.gethostname()}", "wait for it to end")
    assert snapshot(out) == before  # the holder's lock file included
    assert proc.poll() is None


def test_status_reads_a_locked_folder_and_names_the_writer(held, capsys):
    out, proc = held
    lock = (out / LOCK_NAME).read_bytes()
    capsys.readouterr()
    cli.main(["status", str(out)])
    stdout = capsys.readouterr().out
    assert stdout.splitlines()[0].startswith(f"{out}  (being written by pid {proc.pid} on {socket.gethostname()}")
    assert "seed 0  collect" in stdout
    assert (out / LOCK_NAME).read_bytes() == lock


def test_lock_of_a_process_that_is_gone_is_taken_over(tmp_path, capsys):
    out = smoke_folder(tmp_path / "run")
    path = write_lock(out, socket.gethostname(), dead_pid())
    assert writer(out) is None  # status does not name a dead writer
    with FolderLock(out):
        owner = json.loads(path.read_text())
        assert (owner["host"], owner["pid"]) == (socket.gethostname(), os.getpid())
        assert writer(out).startswith(f"pid {os.getpid()} on ")
    assert not path.exists()
    write_lock(out, socket.gethostname(), dead_pid())  # and through the CLI: the command runs on to its own error
    code, _, err = run_cli(["teachers", "--out", out, "--quiet"], capsys)
    assert_one_line_error(code, err, "no dataset")
    assert not path.exists()


def test_lock_of_another_host_is_respected(tmp_path, capsys, snapshot):
    out = smoke_folder(tmp_path / "run")
    path = write_lock(out, "elsewhere.example", 1)
    before = snapshot(out)
    code, _, err = run_cli(["teachers", "--out", out, "--quiet"], capsys)
    assert_one_line_error(code, err, "pid 1 on elsewhere.example", "(mbml run --out x)",
                          f"if that process is gone, remove {path}")
    assert snapshot(out) == before
    assert writer(out).startswith("pid 1 on elsewhere.example")


def test_a_failed_command_leaves_no_lock_and_no_new_folder(tmp_path, capsys):
    out = tmp_path / "new" / "run"
    code, _, err = run_cli(["teachers", "--out", out, "--family", "point-nav", "--preset", "smoke", "--quiet"], capsys)
    assert_one_line_error(code, err, "no dataset")
    assert not (tmp_path / "new").exists()


def test_workers_of_one_command_share_its_lock(tmp_path, make_dataset):
    """`--workers 2`: the seed processes write into the folder whose lock their parent holds."""
    out = smoke_folder(tmp_path / "run")
    for seed in (0, 1):  # the smoke preset's batches need 128 transitions per task
        D.save(make_dataset(k=2, n=160, obs_dim=2, act_dim=2, extras=False, seed=seed), out / f"seed_{seed}" / "data")
    p = subprocess.run([sys.executable, "-m", "mbml.cli", "ensembles", "--seeds", "0", "1", "--workers", "2",
                        "--out", str(out), "--quiet"],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert p.returncode == 0, p.stderr
    assert (out / "seed_0" / "relabel.json").exists() and (out / "seed_1" / "relabel.json").exists()
    assert not (out / LOCK_NAME).exists()
