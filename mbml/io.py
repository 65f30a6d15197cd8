"""Atomic files: JSON, checkpoints of pytrees (msgpack via flax.serialization), stage markers.

Every write goes to a temporary file in the same folder and is renamed into place, so a killed
process leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np

from mbml.errors import MbmlError, one_line


def staging_prefix(path: Path) -> str:
    """The name start of a staging file or folder for `path`: `.NAME.HOST-PID.`, so that a later
    writer can tell one left by a killed process (`clear_stale_staging`) from one still being written."""
    return f".{Path(path).name}.{socket.gethostname()}-{os.getpid()}."


def clear_stale_staging(path: Path) -> None:
    """Remove staging files and folders beside `path` left by a process of this host that is gone
    (killed mid-write). Those of live processes, of other hosts (a shared disk) and of no known
    writer are kept."""
    path = Path(path)
    host = socket.gethostname()
    for entry in path.parent.glob(f".{glob.escape(path.name)}.{glob.escape(host)}-*.*"):
        pid = entry.name[len(path.name) + len(host) + 3:].split(".", 1)[0]
        if pid.isdigit() and not alive(int(pid)):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def alive(pid: int) -> bool:
    """Whether process `pid` of this host exists (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def atomic_write(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """`write(f)` into a temporary file beside `path` (`.NAME.HOST-PID.XXXX`), then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clear_stale_staging(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=staging_prefix(path))
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def _default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=_default) + "\n").encode())


def update_json(path: Path, change: Callable[[dict], dict]) -> dict:
    """Read the JSON object at `path` ({} if missing), write `change(it)` back, under an exclusive
    `flock` on `.NAME.lock` beside it: processes updating one file (the method jobs of one seed under
    `mbml sweep`) never lose each other's entries. Returns what was written."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # a file system without flock: one writer per folder is then the user's to keep
            pass
        new = change(read_json(path) if path.exists() else {})
        write_json(path, new)
        return new
    finally:
        os.close(fd)  # and with it the flock


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise MbmlError(f"missing file {path}") from None
    except OSError as e:  # a folder, no permission
        raise MbmlError(f"cannot read {path}: {one_line(e)}") from None
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, an int of 5000 digits, [[[...]]]
        raise MbmlError(f"corrupt JSON file {path}: {one_line(e)}") from None


def save_pytree(path: Path, tree: Any) -> None:
    from flax import serialization  # here, not at the top: `mbml status` reads JSON only, without JAX

    atomic_write_bytes(path, serialization.to_bytes(tree))


def load_pytree(path: Path, template: Any) -> Any:
    """Restore a pytree saved by `save_pytree` into the structure of `template` (no pickle)."""
    from flax import serialization

    try:
        return serialization.from_bytes(template, Path(path).read_bytes())
    except FileNotFoundError:
        raise MbmlError(f"missing checkpoint {path}") from None
    except Exception as e:  # msgpack raises several types on corrupt input
        raise MbmlError(f"corrupt checkpoint {path}: {type(e).__name__}: {e}") from None


def _aside(final: Path) -> Path:
    return final.with_name(f".{final.name}.old")


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a fully written folder into place (the old one, if any, is removed only afterwards)."""
    final = Path(final)
    restore_replaced(final, settle=0.0)
    old = None
    if final.exists():
        old = _aside(final)
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def restore_replaced(final: Path, settle: float = 0.5) -> bool:
    """Put back the old copy of `final` if a `replace_dir` was killed between its two renames
    (`final` missing, `.NAME.old` present). A reader waits `settle` seconds first, so that it does
    not undo the microseconds-long gap of a replacement still running. True if it restored."""
    final = Path(final)
    old = _aside(final)
    if final.exists() or not old.is_dir():
        return False
    if settle:
        time.sleep(settle)
        if final.exists() or not old.is_dir():
            return False
    os.replace(old, final)
    return True
