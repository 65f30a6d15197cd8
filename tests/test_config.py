"""Validated configs: every field of every section has an allowed range (`config.RULES`), checked when a
preset is built, on `--set` (`override`) and on reading config.json (`from_dict`), with one-line errors
naming the field, the value and the range."""

from __future__ import annotations

import dataclasses
import json

import pytest

from mbml import config as C
from mbml.config import (BCQConfig, DistillConfig, EnsembleConfig, EvalConfig, RunConfig, SACConfig, from_dict,
                         override, preset)
from mbml.errors import MbmlError
from mbml.families import FAMILIES

SMOKE = preset("point-nav", "smoke")


def error_of(fn, *args, **kwargs) -> str:
    with pytest.raises(MbmlError) as e:
        fn(*args, **kwargs)
    assert "\n" not in str(e.value), str(e.value)
    return str(e.value)


def test_every_field_of_every_section_has_a_rule():
    for section, kind in {**C.SECTIONS, "": RunConfig}.items():
        assert set(C.RULES[section]) == {f.name for f in dataclasses.fields(kind)}, section or "RunConfig"


@pytest.mark.parametrize("family", FAMILIES)
def test_every_preset_is_in_range_and_its_batches_fit_its_collection(family):
    for name in C.PRESETS:
        if name == "demo" and family != "point-nav":
            continue
        cfg = preset(family, name)  # built through every section's __post_init__
        C.check_batches(cfg, cfg.sac.total_steps, "the collection")
        assert from_dict(json.loads(json.dumps(C.to_dict(cfg)))) == cfg


@pytest.mark.parametrize("make,message", [
    (lambda: BCQConfig(steps=-5), "bcq.steps=-5: must be a positive integer (at least 1)"),
    (lambda: BCQConfig(batch_size=2.5), "bcq.batch_size=2.5: must be a positive integer (at least 1)"),
    (lambda: BCQConfig(steps=True), "bcq.steps=True: must be a positive integer (at least 1)"),
    (lambda: BCQConfig(lam=1.5), "bcq.lam=1.5: must be in [0, 1]"),
    (lambda: BCQConfig(phi=-0.05), "bcq.phi=-0.05: must be a non-negative number"),
    (lambda: BCQConfig(dataset_size=-1), "bcq.dataset_size=-1: must be a non-negative integer"),
    (lambda: BCQConfig(vae_hidden=(750, 0)), "bcq.vae_hidden=750,0: must be a comma list of positive integers"),
    (lambda: SACConfig(gamma=0.0), "sac.gamma=0.0: must be in (0, 1]"),
    (lambda: SACConfig(tau=1.5), "sac.tau=1.5: must be in (0, 1]"),
    (lambda: SACConfig(lr=float("inf")), "sac.lr=inf: must be a positive number"),
    (lambda: SACConfig(warmup_steps=-1), "sac.warmup_steps=-1: must be a non-negative integer"),
    (lambda: SACConfig(adam_b1=1.0), "sac.adam_b1=1.0: must be in [0, 1)"),
    (lambda: SACConfig(learn_temperature="yes"), "sac.learn_temperature=yes: must be true or false"),
    (lambda: EnsembleConfig(members=0), "ensemble.members=0: must be a positive integer (at least 1)"),
    (lambda: EnsembleConfig(std_quantile=1.1), "ensemble.std_quantile=1.1: must be in [0, 1]"),
    (lambda: EnsembleConfig(std_threshold=-0.1), "ensemble.std_threshold=-0.1: must be a non-negative number"),
    (lambda: EnsembleConfig(next_state_holdout=1.0), "ensemble.next_state_holdout=1.0: must be in [0, 1)"),
    (lambda: EnsembleConfig(next_state_store_mb=-1), "ensemble.next_state_store_mb=-1: must be a non-negative"),
    (lambda: DistillConfig(lr=float("nan")), "distill.lr=nan: must be a positive number"),
    (lambda: DistillConfig(kl_weight=-0.1), "distill.kl_weight=-0.1: must be a non-negative number"),
    (lambda: DistillConfig(hard_negative_sets=1), "distill.hard_negative_sets=1: must be an integer, at least 2"),
    (lambda: DistillConfig(context_size=0), "distill.context_size=0: must be a positive integer"),
    (lambda: DistillConfig(q_hidden=[64]), "distill.q_hidden=[64]: must be a comma list"),
    (lambda: EvalConfig(repeats=0), "eval.repeats=0: must be a positive integer"),
    (lambda: EvalConfig(episodes=5, score_from=5), "eval.score_from=5: must be less than eval.episodes (5)"),
    (lambda: RunConfig(lift="pmap"), "lift=pmap: choose one of auto, vmap, map"),
    (lambda: RunConfig(preset="huge"), "preset=huge: choose one of smoke, demo, cpu, paper"),
    (lambda: RunConfig(family="bogus"), "family=bogus: choose one of point-nav, "),
    (lambda: RunConfig(overrides=("sac.lr=1", 3)), "overrides=sac.lr=1,3: must be a list of"),
    (lambda: RunConfig(sac={"lr": 1}), "sac={'lr': 1}: must be a table of its fields"),
])
def test_a_value_out_of_range_names_field_value_and_range(make, message):
    assert error_of(make).startswith(message)


@pytest.mark.parametrize("make", [
    lambda: SACConfig(gamma=1.0, tau=1.0, warmup_steps=0, adam_b1=0.0, policy_hidden=(), q_hidden=()),
    lambda: BCQConfig(lam=0.0, phi=0.0, dataset_size=0),
    lambda: BCQConfig(lam=1.0, phi=1.5),
    lambda: EnsembleConfig(members=2, std_threshold=0.0, std_quantile=1.0, next_state_holdout=0.0,
                           next_state_store_mb=0),
    lambda: DistillConfig(kl_weight=0.0, triplet_weight=0.0, triplet_margin=0.0, q_target_scale=0.0, lr=1),
    lambda: EvalConfig(episodes=1, score_from=0),
])
def test_the_ends_of_each_range_are_allowed(make):
    make()


def test_set_gives_the_range_error_with_the_item():
    assert error_of(override, SMOKE, ["bcq.steps=-5"]) == "--set bcq.steps=-5: must be a positive integer (at least 1)"
    assert error_of(override, SMOKE, ["ensemble.hidden=128,-1"]).startswith(
        "--set ensemble.hidden=128,-1: must be a comma list of positive integers")


def test_set_checks_a_section_once_with_all_its_items():
    """eval.score_from must stay below eval.episodes: the pair is checked together, in either order."""
    for items in (["eval.episodes=2", "eval.score_from=1"], ["eval.score_from=1", "eval.episodes=2"]):
        cfg = override(SMOKE, items)
        assert (cfg.eval.episodes, cfg.eval.score_from) == (2, 1) and cfg.overrides == tuple(items)
    msg = error_of(override, SMOKE, ["eval.episodes=2", "sac.lr=0.01"])  # the preset's score_from is 2
    assert msg == "--set eval.episodes=2: eval.score_from=2: must be less than eval.episodes (2)"


def _stored(change) -> dict:
    d = C.to_dict(SMOKE)
    change(d)
    return json.loads(json.dumps(d))


@pytest.mark.parametrize("change,fragment", [
    (lambda d: d["bcq"].update(steps=-5), "bcq.steps=-5: must be a positive integer"),
    (lambda d: d["sac"].update(q_hidden=[64, "wide"]), "sac.q_hidden=64,wide: must be a comma list"),
    (lambda d: d["ensemble"].update(members=4.0), "ensemble.members=4.0: must be a positive integer (at least 1)"),
    (lambda d: d["eval"].update(bogus=1), "unknown config field 'eval.bogus'"),
    (lambda d: d.update(distill=[1, 2]), "distill=[1, 2]: must be a table of its fields"),
    (lambda d: d.update(nets={}), "unknown config field 'nets'"),
    (lambda d: d.update(lift=None), "lift=None: choose one of auto, vmap, map"),
    (lambda d: d.update(overrides="sac.lr=1"), "overrides=sac.lr=1: must be a list of SECTION.FIELD=VALUE strings"),
])
def test_a_bad_config_json_is_a_one_line_error_naming_the_file(change, fragment):
    msg = error_of(from_dict, _stored(change), "RUN/config.json: ")
    assert msg.startswith("RUN/config.json: ") and fragment in msg, msg
    assert error_of(from_dict, [1, 2], "X: ") == "X: expected a table of config fields, got [1, 2]"


def test_missing_fields_take_their_defaults():
    d = _stored(lambda d: d["sac"].pop("adam_b1"))
    assert from_dict(d).sac.adam_b1 == SACConfig.adam_b1


def test_batches_no_larger_than_the_dataset():
    C.check_batches(SMOKE, 128, "D")  # the smoke preset's largest batch: the ensembles' 128
    assert error_of(C.check_batches, SMOKE, 127, "D") == (
        "ensemble.batch_size=128: must be at most the 127 transitions per task of D")
    cut = dataclasses.replace(SMOKE, bcq=dataclasses.replace(SMOKE.bcq, dataset_size=99))
    assert error_of(C.check_batches, cut, 10_000, "D").startswith("bcq.batch_size=100: must be at most the 99 ")


def test_drift_counts_a_field_added_since_with_its_default():
    """A run made before `sac.critic` existed collected with the authors' MLP critic (the default a
    resumed run takes); today's ant-dir `cpu` preset uses LayerNorm, so the run is labelled older."""
    from mbml.config import drift, preset, to_dict

    stored = to_dict(preset("ant-dir", "cpu"))
    assert drift(stored) == []
    for name in ("critic", "init_temperature", "warmup", "adam_b1", "learn_temperature", "n_step"):
        del stored["sac"][name]
    stored["sac"]["lr"] = 3e-4
    assert drift(stored) == ["sac.lr=0.0003", "sac.critic=mlp", "sac.init_temperature=1.0", "sac.warmup=policy"]


@pytest.mark.parametrize("first", ["mbml.presets", "mbml.config_rules"])  # the two that failed
def test_any_config_module_can_be_imported_first(first):
    """A fresh interpreter importing one config module before the others (the presets and the config
    import each other; `from mbml.presets import preset` first used to fail)."""
    import subprocess
    import sys

    code = f"import {first}; from mbml.config import preset; print(preset('point-nav', 'smoke').focal.steps)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) > 0


def test_auto_lift_picks_by_backend_and_width():
    import jax

    from mbml.nets import AUTO_MAP_WIDTH, resolve_lift

    assert resolve_lift("vmap", (1024,)) == "vmap" and resolve_lift("map", (8,)) == "map"
    if jax.default_backend() == "cpu":
        assert resolve_lift("auto", (64, 64)) == "vmap"
        assert resolve_lift("auto", (32, AUTO_MAP_WIDTH)) == "map"
    else:
        assert resolve_lift("auto", (1024,)) == "vmap"


def test_a_folder_made_with_a_lift_keeps_it_when_auto_is_asked(tmp_path):
    import dataclasses

    from mbml.config import preset
    from mbml.errors import MbmlError
    from mbml.pipeline import Run

    cfg = preset("point-nav", "smoke")
    assert cfg.lift == "auto"
    Run.open(tmp_path, dataclasses.replace(cfg, lift="map"))
    assert Run.open(tmp_path, cfg).cfg.lift == "map"  # auto: no choice made
    with pytest.raises(MbmlError, match="different config: lift"):
        Run.open(tmp_path, dataclasses.replace(cfg, lift="vmap"))
