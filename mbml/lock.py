"""One writer per run folder: `OUT/.mbml-lock` names the mbml process writing into the folder.

The file holds the writer's host, pid, start time and command, and the writer holds an exclusive
`flock` on it for as long as it lives, so the kernel frees it however the process ends (SIGKILL
included). A later process on the same host takes the lock over when no process holds the flock
(where the file system has no flock: when the pid named is not alive); a lock written on another
host is respected, since a disk shared between hosts need not carry flocks across, and the error
says how to remove it. The seed processes of `--workers N` write for the process that holds the
lock and take none. `mbml status` only reads the file (`writer`).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from mbml.errors import MbmlError
from mbml.io import alive

LOCK_NAME = ".mbml-lock"


def _owner(raw: bytes) -> dict | None:
    """{"host", "pid", "since", "command"} from a lock file's bytes; None if empty or unreadable."""
    try:
        owner = json.loads(raw.decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    ok = isinstance(owner, dict) and isinstance(owner.get("host"), str) and type(owner.get("pid")) is int
    return owner if ok and owner["pid"] > 0 else None


def _said(owner: dict | None) -> str:
    if owner is None:
        return "another mbml process (starting)"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("since", 0)))
    command = " ".join(str(owner.get("command", "")).split())[:200]
    return f"pid {owner['pid']} on {owner['host']} since {since}" + (f" ({command})" if command else "")


def writer(folder: Path) -> str | None:
    """Who is writing into `folder`, in words, if a lock names a process that may be alive (another
    host's always may); None otherwise. Reads the file only: takes no lock."""
    try:
        owner = _owner((Path(folder) / LOCK_NAME).read_bytes())
    except OSError:
        return None
    if owner is None or (owner["host"] == socket.gethostname() and not alive(owner["pid"])):
        return None
    return _said(owner)


class FolderLock:
    """`with FolderLock(out):` the block is the only mbml process writing into `out` (one-line
    MbmlError naming the other one otherwise). Folders it had to create, it removes again if they are
    still empty when it is released, so a command that fails before writing leaves nothing behind."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None
        self._made: list[Path] = []

    def __enter__(self) -> "FolderLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        if self.folder.exists() and not self.folder.is_dir():
            raise MbmlError(f"{self.folder} exists and is not a folder")
        self._made = [p for p in (self.folder, *self.folder.parents) if not p.exists()]
        self.folder.mkdir(parents=True, exist_ok=True)
        host = socket.gethostname()
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            held = _flock(fd)
            if held and not _same_file(fd, self.path):  # its holder removed it since our open: try the new one
                os.close(fd)
                continue
            owner = _owner(os.pread(fd, 1 << 16, 0))
            theirs = held is False or owner is not None and (
                owner["host"] != host or (held is None and alive(owner["pid"])))
            if theirs:
                os.close(fd)  # and with it our flock, if we had one
                self._remove_made()
                hint = (f"; if that process is gone, remove {self.path}" if owner is not None and owner["host"] != host
                        else "; wait for it to end, or stop it")
                raise MbmlError(f"{self.folder} is being written by another mbml process: {_said(owner)}{hint}")
            me = {"host": host, "pid": os.getpid(), "since": time.time(),
                  "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
            self._fd = fd
            return

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            if _same_file(self._fd, self.path):
                self.path.unlink()
        finally:
            os.close(self._fd)
            self._fd = None
        self._remove_made()

    def _remove_made(self) -> None:
        for p in self._made:  # innermost first
            try:
                p.rmdir()
            except OSError:  # not empty (the command wrote something), or gone
                break
        self._made = []


def _flock(fd: int) -> bool | None:
    """Try an exclusive flock: True if taken, False if another process holds one, None if the file
    system has no flock."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return None
    return True


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False
