"""`mbml status RUN`: how far a run folder is, stage by stage, without loading anything big.

A stage is *done* when its output exists, *stopped* or *running* when it has a checkpoint (its
progress file says how far; a heartbeat younger than three beats means a process is at it, and a
running stage's heartbeat says how far it is now), else *pending* (*started*: a checkpoint of an
older mbml, without a progress file). Times are those of
`timings.json`, plus the time so far of a stage in progress.
"""

from __future__ import annotations

import time
from pathlib import Path

from mbml import io
from mbml.errors import MbmlError
from mbml.lock import writer
from mbml.steps import HEARTBEAT, seed_steps


def read_record(out: Path) -> dict:
    """A run folder's run.json (`Run.record` writes it; {} if it has none), checked: seeds and methods, where
    given, are lists of integers and of names."""
    path = Path(out) / "run.json"
    rec = io.read_json(path) if path.exists() else {}
    if not (isinstance(rec, dict) and all(type(s) is int for s in _listed(rec, "seeds"))
            and all(isinstance(m, str) for m in _listed(rec, "methods"))):
        raise MbmlError(f"{path} is not a run record (seeds: a list of integers, methods: a list of names); "
                        "fix or remove it")
    return rec


def _listed(rec: dict, key: str) -> list:
    value = rec.get(key, [])
    return value if isinstance(value, list) else [None]


def run_status(out: Path, now: float | None = None) -> list[dict]:
    """One row per (seed, stage): {"seed", "stage", "state", "done", "total", "seconds", "part"}
    ("part": what a running stage is doing, e.g. "next-state ensembles", when its heartbeat says)."""
    out = Path(out)
    if not (out / "config.json").exists():
        raise MbmlError(f"{out} is not a run folder (no config.json)")
    recorded = read_record(out)
    methods = list(recorded.get("methods", ["full", "neither"]))
    now = time.time() if now is None else now
    rows = []
    for seed in recorded.get("seeds", [0]):
        d = out / f"seed_{seed}"
        timings = io.read_json(d / "timings.json") if (d / "timings.json").exists() else {}
        for step in seed_steps(methods):
            stage, marker, ckpt = step.name, step.marker, step.ckpt
            row = {"seed": seed, "stage": stage, "state": "pending", "done": None, "total": None,
                   "seconds": timings.get(stage), "part": None}
            progress = d / "ckpt" / f"{ckpt}.progress.json"
            beat = d / "ckpt" / f"{stage}.seconds.json"
            try:
                alive = now - beat.stat().st_mtime < 3 * HEARTBEAT
            except FileNotFoundError:
                alive = False
            p = _read(progress) if ckpt else None
            if (d / marker).exists():
                row["state"] = "done"
            elif p is not None:
                row.update(state="running" if alive else "stopped", done=p["done"], total=p["total"])
            elif ckpt and (d / "ckpt" / f"{ckpt}.msgpack").exists():
                row["state"] = "running" if alive else "started"  # "started": an older mbml's checkpoint
            elif alive:
                row["state"] = "running"  # before its first checkpoint, or a stage without any
            b = _read(beat) if row["state"] != "done" else None
            if b is not None:
                row["seconds"] = b["seconds"]
                if row["state"] == "running" and "done" in b:  # steps so far, not only to the last checkpoint
                    row.update(done=b["done"], total=b["total"], part=b.get("part"))
            rows.append(row)
    return rows


def _read(path: Path) -> dict | None:
    """A small JSON file, or None if it is not there (any of them may vanish as a stage finishes)."""
    try:
        return io.read_json(path)
    except MbmlError:
        return None


def hms(seconds: float | None) -> str:
    """1h02m, 4m00s; "" for None."""
    if seconds is None:
        return ""
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def status_lines(out: Path, now: float | None = None) -> list[str]:
    """The status as plain text lines (what `mbml status` prints)."""
    rows = run_status(out, now)
    who = writer(out)  # read only: status takes no lock
    lines = [f"{out}" + ("  (report written)" if (Path(out) / "results.json").exists() else "")
             + (f"  (being written by {who})" if who else "")]
    width = max([22, *(len(r["stage"]) for r in rows)])
    for r in rows:
        how = f"{r['done']}/{r['total']}" if r["done"] is not None else ""
        part = r["part"] if r["part"] and r["part"].replace("_", " ") not in r["stage"].replace("_", " ") else ""
        lines.append(f"  seed {r['seed']}  {r['stage']:<{width}} {r['state']:<8} {how:>15} {hms(r['seconds']):>8}"
                     + (f"  ({part})" if part else ""))
    return lines + transfer_lines(out, width)


def transfer_lines(out: Path, width: int = 22) -> list[str]:
    """The arms of every `mbml transfer` folder (RUN/transfer/NAME): done (its curve is written), started
    (a checkpoint says how far: running now or stopped) or pending."""
    lines = []
    for folder in sorted(Path(out).glob("transfer/*/config.json")):
        rec = _read(folder) or {}
        arms = rec.get("transfer", {}).get("arms", [])
        lines.append(f"  transfer {folder.parent.name}" + ("  (summary written)" if (folder.parent / "results.json").exists()
                                                          else ""))
        for seed in rec.get("seeds", []):
            d = folder.parent / f"seed_{seed}"
            for arm in arms:
                p = _read(d / "ckpt" / f"{arm}.progress.json")
                state = "done" if (d / f"{arm}.json").exists() else "started" if p is not None else "pending"
                how = f"{p['done']}/{p['total']}" if p is not None and state == "started" else ""
                lines.append(f"  seed {seed}  {'transfer ' + arm:<{width}} {state:<8} {how:>15}".rstrip())
    return lines
