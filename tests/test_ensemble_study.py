"""The reward-ensemble study (paper Fig. 7) and the single-network relabeller (`ensemble.members=1`)."""

from __future__ import annotations

import jax
import numpy as np

from mbml import io
from mbml.config import EnsembleConfig
from mbml.ensembles import accept_mask, ensemble_outputs, init_members, reward_target, thresholds


def test_a_single_network_has_no_spread_and_accepts_every_relabelled_transition(make_dataset):
    ds = make_dataset(k=3, n=16)
    cfg = EnsembleConfig(members=1, hidden=(8,), std_threshold=0.1)
    target = reward_target(cfg)
    members = init_members(cfg, target, 3, 2, 2, jax.random.PRNGKey(0))
    mean, std = ensemble_outputs(target, members, ds)
    assert np.all(std == 0) and np.all(np.isfinite(mean))
    for quantile_cfg in (cfg, EnsembleConfig(members=1, std_threshold=0.0)):  # fixed and quantile thresholds
        accept = accept_mask(std, thresholds(quantile_cfg, std))
        assert np.array_equal(accept, np.broadcast_to(~np.eye(3, dtype=bool)[:, :, None], accept.shape))


def test_the_study_sweeps_thresholds_and_measures_a_single_member(smoke_full_run):
    from mbml.ensemble_study import seed_study
    from mbml.pipeline import Run

    run = Run.open(smoke_full_run, create=False)
    study = seed_study(run, 0)
    with np.load(smoke_full_run / "seed_0" / "relabel.npz") as z:
        mean, true = z["mean"], z["true"]
    off = np.broadcast_to(~np.eye(len(mean), dtype=bool)[:, :, None], mean.shape)
    assert np.isclose(study["ensemble_all"], np.abs(mean - true)[off].mean(), rtol=1e-6)
    # each threshold is a quantile q of the std: about a fraction q of the transitions lie below it
    rates, levels = np.array(study["accept_rate"]), np.array(study["quantiles"])
    assert np.all(np.diff(rates) >= 0) and np.all(rates <= levels + 1e-9) and np.all(rates >= levels - 0.05)
    # member 0 alone: a different relabeller from the mean of all members, measured on the same pairs
    assert np.isfinite(study["single_all"]) and study["single_all"] != study["ensemble_all"]
    assert io.read_json(smoke_full_run / "seed_0" / "ensemble_study.json") == study  # cached


def test_evaluate_protocol_adds_scores_without_retraining(smoke_full_run, capsys, snapshot):
    from mbml.cli import main

    students = snapshot(smoke_full_run / "seed_0" / "students")
    main(["evaluate", "--out", str(smoke_full_run), "--protocol", "nonprior", "--quiet"])
    ev = io.read_json(smoke_full_run / "seed_0" / "eval" / "full@nonprior.json")
    assert set(ev) >= {"train", "test"} and len(ev["test"]["score"]) == 8
    res = io.read_json(smoke_full_run / "results.json")
    assert res["methods"]["full"]["protocols"]["nonprior"]["test"]["per_seed"] == [np.mean(ev["test"]["score"])]
    assert "nonprior" in (smoke_full_run / "report.md").read_text()
    assert snapshot(smoke_full_run / "seed_0" / "students") == students  # nothing retrained



def test_evaluate_protocol_reports_only_methods_evaluated_on_every_seed(smoke_full_run, tmp_path):
    """A run stopped before one of its methods was trained (`neither` recorded in run.json, never
    distilled): another protocol's scores for the others still refresh the report, without it."""
    import json
    import shutil

    from mbml.cli import main

    out = tmp_path / "run"
    shutil.copytree(smoke_full_run, out)
    rec = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**rec, "methods": [*rec["methods"], "neither"]}))
    main(["evaluate", "--out", str(out), "--protocol", "nonprior", "--methods", "full", "--quiet"])
    assert list(io.read_json(out / "results.json")["methods"]) == ["full"]
