"""The method registry: the one table of every method mbml trains and compares.

A method names the pipeline outputs its training reads, its config section, and the module that
implements it. CLI help, the step table (`mbml.steps`), `mbml status`, figures, reports and `mbml
compare` read this table; adding a method touches this table and the method's own module. Light to
import (no JAX): `mbml status` reads it.

A method's module provides (all pure but `train`'s host loop):

    init(cfg: RunConfig, key, obs_dim, act_dim) -> params     # what is saved and what the agent acts with
    agent(cfg: RunConfig, act_dim) -> mbml.agents.Agent
    train(cfg: RunConfig, method: str, act_dim, inputs: dict, key, ckpt=None, progress=None, on_eval=None)
        -> params
        # inputs: "data" (transitions.device_data), and "teachers" / "relabel" where `needs` says so.
        # on_eval(params, step, metrics) -> score on the training tasks, called every `eval_every` steps;
        # the best-scoring params are returned (as the MBML students and teachers are chosen).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from mbml.config import METHODS as SWITCHES
from mbml.errors import MbmlError


@dataclass(frozen=True)
class MethodInfo:
    name: str
    summary: str
    """One line, for CLI help and reports."""
    needs: tuple[str, ...]
    """Pipeline steps whose outputs its training reads (collect: the datasets)."""
    section: str
    """Its config section (RunConfig field), whose `steps` and `eval_every` set its training."""
    module: str
    """The module implementing `init`, `agent` and `train`."""
    color: str
    """Its colour in every figure."""
    paper: bool = True
    """One of the paper's methods (Fig. 4 and Fig. 6)."""

    @property
    def is_student(self) -> bool:
        """An MBML variant: a student distilled from the teachers (switches of one code path)."""
        return self.name in SWITCHES

    @property
    def step(self) -> str:
        """The name of its training step (`timings.json`, checkpoints, `mbml status`)."""
        return f"distill_{self.name}" if self.is_student else f"train_{self.name}"

    def implementation(self):
        return importlib.import_module(self.module)


def _student(name: str, summary: str, color: str) -> MethodInfo:
    relabels = SWITCHES[name].relabel == "ensemble"
    return MethodInfo(name, summary, ("collect", "teachers", *(("ensembles",) if relabels else ())), "distill",
                      "mbml.distill", color)


REGISTRY: dict[str, MethodInfo] = {m.name: m for m in (
    _student("full", "MBML: relabelled contexts and the triplet loss (Eq. 8-10)", "tab:blue"),
    _student("no_relabel", "MBML without relabelling: hard-negative triplets (Eq. 11), NR in Fig. 6", "tab:green"),
    _student("no_triplet", "MBML without the triplet loss, NT in Fig. 6", "tab:red"),
    _student("neither", "MBML with neither: the plain distilled student, Fig. 6", "tab:orange"),
    _student("gt_relabel", "MBML relabelled with the true reward, GT in Fig. 6", "tab:purple"),
    MethodInfo("contextual_bcq", "Contextual BCQ: one BCQ on z from the encoder, from scratch (baselines §1)",
               ("collect",), "contextual_bcq", "mbml.baselines.contextual_bcq", "tab:brown"),
    MethodInfo("batch_pearl", "Batch PEARL: PEARL's SAC with V, from the fixed datasets (baselines §2)",
               ("collect",), "batch_pearl", "mbml.baselines.batch_pearl", "tab:gray"),
    MethodInfo("focal", "FOCAL: deterministic encoder by distance metric learning, BRAC-regularised SAC (baselines §3)",
               ("collect",), "focal", "mbml.baselines.focal", "tab:cyan", paper=False),
)}


def get(name: str) -> MethodInfo:
    if not isinstance(name, str) or name not in REGISTRY:
        raise MbmlError(f"unknown method {name!r}; choose from: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def help_text() -> str:
    """The methods, one per line, for CLI help."""
    return "; ".join(REGISTRY)
