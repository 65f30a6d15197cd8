"""A seed's pipeline steps and their done-markers: the one table that `mbml run`, `mbml status` and
the run folder agree on. Light to import (no JAX), so `mbml status` answers at once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from mbml.config import METHODS

HEARTBEAT = 30.0
"""Seconds between writes of a running stage's time so far (what an interruption can lose)."""

STAGES = ("collect", "teachers", "ensembles", "distill", "evaluate", "report")
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


def seed_steps(methods, ensembles: bool | None = None) -> list[Step]:
    """A seed's steps in pipeline order. Ensembles are included when a method relabels with them
    (`ensembles=None`), or as asked."""
    if ensembles is None:
        ensembles = any(METHODS[m].relabel == "ensemble" for m in methods if m in METHODS)
    steps = [Step("collect", "collect", "data/meta.json", "collect", output="dataset"),
             Step("teachers", "teachers", "teachers.json", "teachers", needs=("collect",), output="teachers")]
    if ensembles:
        steps.append(Step("ensembles", "ensembles", "relabel.json", "ensembles", needs=("collect",),
                          output="relabelling"))
    for m in methods:
        relabels = m in METHODS and METHODS[m].relabel == "ensemble"
        steps += [Step(f"distill_{m}", "distill", f"students/{m}.msgpack", f"distill_{m}", m,
                       needs=("collect", "teachers", *(("ensembles",) if relabels else ())), output=f"{m} student"),
                  Step(f"evaluate_{m}", "evaluate", f"eval/{m}.json", f"evaluate_{m}", m,
                       needs=(f"distill_{m}", "collect"), output=f"{m} evaluation")]  # collect: the diagnostic
    steps.append(Step("references", "evaluate", "eval/references.json", "references", needs=("collect", "teachers"),
                      output="references"))
    return steps


def stage_steps(methods, stages) -> list[Step]:
    """The steps that `stages` run for one seed, in pipeline order (`mbml ensembles` alone trains the
    ensembles even when no method asked for relabels with them)."""
    return [s for s in seed_steps(methods, ensembles=None if "distill" in stages else True) if s.stage in stages]


def done_marker(name: str, method: str = "") -> str:
    """The done-marker of a step (seed_steps is the one table of them)."""
    return next(s.marker for s in seed_steps([method] if method else [], ensembles=True)
                if s.name == (f"{name}_{method}" if method else name))
