"""Chunked, resumable training loops: the host side of every stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import jax

from mbml.errors import MbmlError
from mbml.io import load_pytree, read_json, save_pytree, write_json


def run_chunks(carry: Any, total: int, chunk: int, advance: Callable[[Any, int, int], Any],
               ckpt: Path | None = None, progress: Callable[[int, int], None] | None = None,
               after: Callable[[Any, int], Any] | None = None) -> Any:
    """Call `advance(carry, done, n)` until `total` steps are done, `n <= chunk` steps at a time.

    After each chunk `after(carry, done)` may update the carry (evaluation, model selection) and the
    carry is checkpointed atomically to `ckpt`; a later call with the same `ckpt` resumes there.
    `progress_file(ckpt)` then holds {"done", "total"}, small, for `mbml status`.
    """
    done = 0
    if ckpt is not None and Path(ckpt).exists():
        state = load_pytree(ckpt, {"carry": carry, "done": 0})
        carry, done = state["carry"], int(state["done"])
    if progress:
        progress(_resumes_at(ckpt, done), total)
    while done < total:
        n = min(chunk, total - done)
        carry = advance(carry, done, n)
        done += n
        if after is not None:
            carry = after(carry, done)
        if ckpt is not None:
            save_pytree(ckpt, {"carry": jax.device_get(carry), "done": done})
            write_json(progress_file(ckpt), {"done": done, "total": total})
        if progress:
            progress(done, total)
    return carry


def _resumes_at(ckpt: Path | None, done: int) -> int:
    """Where a stage continues: its progress file may be ahead of the checkpoint (a host collection's
    mid-chunk snapshot), and the first progress report should say so (bars' rates and times left)."""
    if ckpt is None:
        return done
    try:
        return max(done, int(read_json(progress_file(ckpt))["done"]))
    except (MbmlError, KeyError, TypeError, ValueError):
        return done


def progress_file(ckpt: Path) -> Path:
    """The small file beside a checkpoint saying how far it is: `<name>.progress.json`."""
    return Path(ckpt).with_suffix(".progress.json")


def remove_checkpoint(ckpt: Path) -> None:
    """Remove a checkpoint and what belongs to it: its progress file, a host collection's mid-chunk
    snapshot (`.mid.pkl`), an evaluation's kept parts (`.parts.json`), and the temporary files that
    a kill during an atomic write of any of them leaves (`.NAME.XXXX`)."""
    ckpt = Path(ckpt)
    for path in (ckpt, progress_file(ckpt), ckpt.with_suffix(".mid.pkl"), ckpt.with_suffix(".parts.json")):
        path.unlink(missing_ok=True)
        for tmp in path.parent.glob(f".{path.name}.*") if path.parent.exists() else ():
            tmp.unlink(missing_ok=True)