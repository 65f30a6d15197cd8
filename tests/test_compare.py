"""`mbml compare`: the statistics against hand computations and scipy, and the command end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mbml import compare as K
from mbml.errors import MbmlError


def test_iqm_is_scipys_trimmed_mean():
    from scipy.stats import trim_mean

    rng = np.random.default_rng(0)
    for shape in ((5, 8), (3, 1), (10, 3), (1, 7)):
        x = rng.normal(size=shape)
        assert K.iqm(x) == pytest.approx(trim_mean(x.ravel(), 0.25), rel=1e-12)
    assert K.iqm(np.array([[0.0], [1.0], [2.0], [100.0]])) == 1.5  # the outlier and the lowest dropped


def test_probability_of_improvement_by_hand():
    x = np.array([[1.0, 5.0], [3.0, 5.0]])  # [seeds, tasks]
    y = np.array([[2.0, 5.0], [2.0, 4.0]])
    # task 0: pairs (1>2 no, 1>2 no, 3>2 yes, 3>2 yes) = 0.5; task 1: (5 vs 5 tie, 5>4, 5 vs 5 tie, 5>4) = (0.5+1+0.5+1)/4
    assert K.prob_improvement(x, y) == pytest.approx((0.5 + 0.75) / 2)
    assert K.prob_improvement(y, y) == pytest.approx(0.5)


def test_stratified_bootstrap_resamples_seeds_within_each_task():
    rng = np.random.default_rng(1)
    same = np.tile(np.array([[1.0, 2.0, 3.0]]), (4, 1))  # every seed alike: nothing to be unsure about
    assert K.stratified_bootstrap_ci(same, K.iqm, rng) == [pytest.approx(2.0)] * 2
    x = np.random.default_rng(2).normal(size=(6, 4))
    lo, hi = K.stratified_bootstrap_ci(x, K.iqm, np.random.default_rng(3))
    assert lo < K.iqm(x) < hi and hi - lo > 0.1
    assert [lo, hi] == K.stratified_bootstrap_ci(x, K.iqm, np.random.default_rng(3))  # one seed, same interval
    # each resample keeps task columns apart: the mean of task means is bounded by each task's extremes
    col = np.array([[0.0, 10.0], [1.0, 11.0]])
    lo, hi = K.stratified_bootstrap_ci(col, lambda s: float(s.mean()), np.random.default_rng(4), reps=500)
    assert 5.0 <= lo <= hi <= 6.0


def _results(methods: dict, family="point-nav", preset="demo", seeds=(0, 1, 2), path="runs/a") -> dict:
    """A results.json of schema 2 holding `methods`: name -> [seeds, tasks] test scores."""
    res = {"schema": 2, "family": family, "preset": preset, "seeds": list(seeds), "config": {}, "timings": {"x": 3600.0},
           "references": {"random": {"test": {"mean": -10.0}, "train": {"mean": -10.0}}}, "methods": {}, "_path": path}
    for m, sc in methods.items():
        sc = np.asarray(sc, float)
        stats = {"mean": float(sc.mean()), "ci95": [0, 0], "per_seed": sc.mean(1).tolist(),
                 "per_task": sc.mean(0).tolist(), "per_seed_task": sc.tolist(),
                 "last_episode": {"mean": float(sc.mean() + 1), "per_seed": (sc.mean(1) + 1).tolist()}}
        res["methods"][m] = {"test": stats, "train": stats,
                             "curve": {"step": [10, 20], "test_score": [[0.0, v] for v in sc.mean(1)],
                                       "train_score": [[0.0, v] for v in sc.mean(1)]}}
    return res


def test_compare_numbers_and_paired_differences():
    full = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    other = [[0.0, 1.0], [3.0, 3.0], [2.0, 2.0]]
    cmp = K.compare([_results({"full": full, "contextual_bcq": other})])
    assert cmp["reference"] == "full"
    c = cmp["methods"]["contextual_bcq"]
    assert c["test"]["per_seed"] == [0.5, 3.0, 2.0]
    assert c["test"]["last_episode"] == pytest.approx(np.mean([0.5, 3.0, 2.0]) + 1)
    d = c["paired_test_difference"]  # full - contextual_bcq per seed: 1.5-0.5, 3.5-3, 5.5-2
    assert d["per_seed"] == pytest.approx([1.0, 0.5, 3.5]) and d["mean"] == pytest.approx(5.0 / 3)
    lo, hi = d["ci95"]
    half = 4.303 * np.std([1.0, 0.5, 3.5], ddof=1) / np.sqrt(3)
    assert (lo, hi) == pytest.approx((5.0 / 3 - half, 5.0 / 3 + half))
    assert c["test"]["p_full_better"] == pytest.approx(K.prob_improvement(np.array(full), np.array(other)))
    assert "paired_test_difference" not in cmp["methods"]["full"]


def test_methods_of_different_runs_are_not_paired_and_mixed_runs_are_refused():
    a = _results({"full": [[1.0], [2.0]]}, seeds=(0, 1), path="runs/a")
    b = _results({"full": [[0.0], [1.0]]}, seeds=(0, 1), path="runs/b")
    cmp = K.compare([a, b])
    assert set(cmp["methods"]) == {"full (a)", "full (b)"}  # the same method twice: named by run
    assert "paired_test_difference" not in cmp["methods"]["full (b)"]  # other datasets: nothing to pair
    other = _results({"full": [[1.0], [2.0]]}, family="walker-param", preset="cpu", path="runs/run")
    with pytest.raises(MbmlError, match="different families or presets.*--allow-mixed"):
        K.check_comparable([a, other], allow_mixed=False)
    K.check_comparable([a, other], allow_mixed=True)
    mixed = K.compare([a, other])["methods"]
    assert not any(k.startswith("p_") for k in mixed["full (run)"]["test"])  # no P(better) across families
    with pytest.raises(MbmlError, match="--reference nope"):
        K.compare([a], reference="nope")


def test_compare_command_writes_tables_and_figures(tmp_path, capsys):
    from mbml.cli import main

    run = tmp_path / "run"
    run.mkdir()
    res = _results({"full": [[1.0, 2.0], [3.0, 4.0]], "batch_pearl": [[0.0, 0.0], [1.0, 0.0]]}, seeds=(0, 1))
    res.pop("_path")
    (run / "results.json").write_text(json.dumps(res))
    out = tmp_path / "cmp"
    main(["compare", str(run), "--out", str(out)])
    printed = capsys.readouterr().out
    assert "| `batch_pearl` | 2 | 0.25 [" in printed and "| `full` | 2 | 2.50 [" in printed
    saved = json.loads((out / "compare.json").read_text())
    assert saved["methods"]["batch_pearl"]["paired_test_difference"]["per_seed"] == [1.5, 3.0]
    assert "## Runs" in (out / "compare.md").read_text()
    for f in ("scores.png", "curves.png"):
        assert (out / f).stat().st_size > 10_000
    with pytest.raises(SystemExit) as e:
        main(["compare", str(tmp_path / "nowhere"), "--out", str(out)])
    assert e.value.code == 2 and "no " in capsys.readouterr().err
