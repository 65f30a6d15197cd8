"""A seed's pipeline steps and their done-markers: the one table that `mbml run`, `mbml status` and
the run folder agree on. Light to import (no JAX), so `mbml status` answers at once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import hashlib

from mbml.methods import REGISTRY, get as get_method

HEARTBEAT = 30.0
"""Seconds between writes of a running stage's time so far (what an interruption can lose)."""

STAGES = ("collect", "teachers", "ensembles", "distill", "evaluate", "report")
"""The CLI's stages in pipeline order (`distill` trains every method: students and baselines)."""
_LEGACY_KEYS = {name: i for i, name in enumerate(STAGES)}
"""The PRNG-key numbers of the stages that existed before keys came from names: fixed, so that the
run folders made then give the same numbers."""


def stage_key(name: str) -> int:
    """The number a seed's key is folded with for the stage or step `name`: stable under additions
    (a hash of the name, the original stages' fixed numbers), never the position of a stage in a list."""
    if name in _LEGACY_KEYS:
        return _LEGACY_KEYS[name]
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little") & 0x7FFFFFFF
Progress = Callable[[str, int, int], None]  # (label, done, total)
OFFLINE_STAGES = ("teachers", "ensembles")
"""The stages that need no simulator: all that run on a folder whose data have no family (teachers
then keep their last checkpoint, without online evaluation)."""


@dataclass(frozen=True)
class Step:
    """One unit of a seed's pipeline, as `timings.json` and `mbml status` name it."""

    name: str  # collect, teachers, ensembles, distill_M, evaluate_M, references
    stage: str  # the CLI stage (STAGES) that runs it
    marker: str  # the output that marks it done, relative to the seed folder (written last)
    ckpt: str = ""  # its checkpoint under ckpt/ (without .msgpack), or its kept parts (pipeline.Parts)
    method: str | None = None
    needs: tuple[str, ...] = ()  # the steps whose outputs it reads
    output: str = ""  # what its output is called in an error ("no teachers in ...")


def seed_steps(methods, ensembles: bool | None = None, teachers: bool | None = None) -> list[Step]:
    """A seed's steps in pipeline order. Teachers and ensembles are included when a method needs them
    (`None`), or as asked. Each method's training step is named by the registry (`distill_M` for the
    MBML students, `train_M` for the baselines); every method's output is `students/M.msgpack`."""
    infos = [get_method(m) for m in methods if m in REGISTRY]
    if ensembles is None:
        ensembles = any("ensembles" in i.needs for i in infos)
    if teachers is None:
        teachers = not infos or any("teachers" in i.needs for i in infos)
    steps = [Step("collect", "collect", "data/meta.json", "collect", output="dataset")]
    if teachers:
        steps.append(Step("teachers", "teachers", "teachers.json", "teachers", needs=("collect",), output="teachers"))
    if ensembles:
        steps.append(Step("ensembles", "ensembles", "relabel.json", "ensembles", needs=("collect",),
                          output="relabelling"))
    for info in infos:
        m = info.name
        kind = "student" if info.is_student else "agent"
        steps += [Step(info.step, "distill", f"students/{m}.msgpack", info.step, m, needs=info.needs,
                       output=f"{m} {kind}"),
                  Step(f"evaluate_{m}", "evaluate", f"eval/{m}.json", f"evaluate_{m}", m,
                       needs=(info.step, "collect"), output=f"{m} evaluation")]  # collect: the diagnostic
    steps.append(Step("references", "evaluate", "eval/references.json", "references",
                      needs=("collect", "teachers") if teachers else ("collect",), output="references"))
    return steps


def stage_steps(methods, stages) -> list[Step]:
    """The steps that `stages` run for one seed, in pipeline order (`mbml ensembles` alone trains the
    ensembles even when no method asked for relabels with them)."""
    auto = None if "distill" in stages else True
    return [s for s in seed_steps(methods, ensembles=auto, teachers=auto) if s.stage in stages]


def done_marker(name: str, method: str = "") -> str:
    """The done-marker of a step (seed_steps is the one table of them)."""
    if method and name == "distill":
        name = get_method(method).step
    return next(s.marker for s in seed_steps([method] if method else [], ensembles=True, teachers=True)
                if s.name == (f"{name}_{method}" if method and name == "evaluate" else name))
