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


def scan_steps(carry: dict, length: int, step: Callable):
    """`length` steps of `step(learner, key) -> (learner, metrics)` under `lax.scan` on carry["learner"],
    with keys split from carry["key"]; the chunk's metrics averaged (the body of a jitted chunk)."""
    import jax.numpy as jnp

    key, sub = jax.random.split(carry["key"])
    learner, metrics = jax.lax.scan(step, carry["learner"], jax.random.split(sub, length))
    return {**carry, "learner": learner, "key": key, "metrics": jax.tree.map(jnp.mean, metrics)}


def train_keeping_best(learner, params_of: Callable[[Any], Any], metrics0, key, total: int, chunk: int,
                       advance: Callable[[dict, int, int], dict], ckpt: Path | None = None,
                       progress: Callable[[int, int], None] | None = None,
                       on_eval: Callable[[Any, int, dict], float | None] | None = None):
    """A learner trained by `run_chunks`, keeping the parameters that score best on the training tasks.

    The carry is {"learner", "key", "metrics" (shaped like `metrics0`), "best", "best_score"};
    `advance(carry, done, n)` trains n steps. After each chunk `on_eval(params_of(learner), done,
    metrics)` returns the protocol's score on the training tasks (or None); the best-scoring parameters
    are returned, else the last ones. `ckpt` makes it resumable to the same numbers.
    """
    import jax.numpy as jnp

    params = params_of(learner)
    carry = {"learner": learner, "key": key, "metrics": jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metrics0),
             "best": jax.tree.map(jnp.copy, params), "best_score": jnp.array(-jnp.inf, jnp.float32)}

    def after(state, done):
        if on_eval is None:
            return state
        params = params_of(state["learner"])
        score = on_eval(params, done, {k: float(v) for k, v in jax.device_get(state["metrics"]).items()})
        if score is not None and score > float(state["best_score"]):
            state = {**state, "best": jax.tree.map(jnp.copy, params), "best_score": jnp.asarray(score, jnp.float32)}
        return state

    carry = run_chunks(carry, total, chunk, advance, ckpt, progress, after)
    return carry["best"] if bool(jnp.isfinite(carry["best_score"])) else params_of(carry["learner"])


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