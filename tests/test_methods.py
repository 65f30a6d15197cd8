"""The method registry, the steps it gives a seed, stable PRNG keys, and old run folders."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mbml import io, methods as M
from mbml.config import METHODS, preset, to_dict
from mbml.errors import MbmlError
from mbml.steps import seed_steps, stage_key, stage_steps


def test_every_method_provides_the_contract():
    assert set(METHODS) <= set(M.REGISTRY)  # the five MBML switches are methods
    for name, info in M.REGISTRY.items():
        impl = info.implementation()
        for fn in ("init", "agent"):
            assert callable(getattr(impl, fn)), (name, fn)
        assert info.is_student or callable(impl.train), name
        assert info.section in to_dict(preset("point-nav", "smoke")), name
        assert "collect" in info.needs
    with pytest.raises(MbmlError, match="unknown method 'nope'; choose from: full, .*contextual_bcq"):
        M.get("nope")


def test_stage_keys_are_stable_names_not_positions():
    # the stages of the first versions keep their numbers (their run folders give the same results) ...
    assert [stage_key(s) for s in ("collect", "teachers", "ensembles", "distill", "evaluate", "report")] == list(range(6))
    # ... and later steps are numbered by their names: fixed here, whatever is added around them
    assert stage_key("train_contextual_bcq") == 833037915
    assert stage_key("train_batch_pearl") == 1723765034
    assert len({stage_key(f"train_{m}") for m in M.REGISTRY} | set(range(6))) == len(M.REGISTRY) + 6


def test_baselines_need_only_the_datasets():
    names = [s.name for s in seed_steps(["contextual_bcq", "batch_pearl"])]
    assert names == ["collect", "train_contextual_bcq", "evaluate_contextual_bcq", "train_batch_pearl",
                     "evaluate_batch_pearl", "references"]
    assert next(s for s in seed_steps(["batch_pearl"]) if s.name == "references").needs == ("collect",)
    mixed = [s.name for s in seed_steps(["full", "contextual_bcq"])]
    assert mixed[:3] == ["collect", "teachers", "ensembles"] and "train_contextual_bcq" in mixed
    # a stage command alone runs its stage, whatever the methods need
    assert [s.name for s in stage_steps(["batch_pearl"], ["teachers"])] == ["teachers"]
    assert {s.marker for s in seed_steps(list(M.REGISTRY)) if s.stage == "distill"} == {
        f"students/{m}.msgpack" for m in M.REGISTRY}


def test_status_stays_free_of_jax():
    code = "import sys, mbml.status, mbml.methods, mbml.steps; print('jax' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_an_old_run_folder_gains_the_new_sections_from_its_preset(tmp_path):
    """A folder made before the baselines existed (no contextual_bcq / batch_pearl in config.json)
    opens under its own config, the new sections from its preset, and says so in config.json."""
    from mbml.pipeline import Run

    cfg = preset("point-nav", "smoke")
    old = to_dict(cfg)
    for name in ("contextual_bcq", "batch_pearl"):
        old.pop(name)
    old["distill"]["steps"] = 80  # a folder made with other settings keeps them
    out = tmp_path / "run"
    out.mkdir()
    io.write_json(out / "config.json", old)
    with pytest.raises(MbmlError, match="different config: distill.steps"):
        Run.open(out, cfg)  # today's preset differs in distill.steps: refused, nothing written
    assert "batch_pearl" not in io.read_json(out / "config.json")
    run = Run.open(out)
    assert run.cfg.distill.steps == 80 and run.cfg.batch_pearl == cfg.batch_pearl
    saved = io.read_json(out / "config.json")
    assert saved["contextual_bcq"] == json.loads(json.dumps(to_dict(cfg)["contextual_bcq"]))
    assert saved["distill"]["steps"] == 80


def test_all_stands_for_every_method():
    from mbml.orchestrate import _check, expand_methods

    assert expand_methods(("all",)) == tuple(M.REGISTRY)
    assert expand_methods(("neither", "batch_pearl")) == ("neither", "batch_pearl")
    with pytest.raises(MbmlError, match="methods repeat"):
        _check(expand_methods(("full", "all")), (0,))
