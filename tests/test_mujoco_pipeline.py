"""The whole pipeline on a MuJoCo family (host-stepped environments), at the smoke budget."""

from __future__ import annotations

import numpy as np
import pytest

from mbml import io
from mbml.cli import run_pipeline
from mbml.config import preset
from mbml.data import load
from mbml.ensembles import accept_mask
from mbml.pipeline import Run


@pytest.mark.parametrize("family", ["umaze-goal"])
def test_smoke_pipeline_on_a_mujoco_family(tmp_path, family):
    out = tmp_path / family
    res = run_pipeline(out, family, "smoke", seeds=(0,), methods=("full", "neither"), quiet=True, workers=1)
    ds = load(out / "seed_0" / "data", min_tasks=2)
    assert ds.observations.shape[:2] == (10, 600) and ds.observations.shape[2] == 4
    assert ds.timeouts[:, 299].all() and ds.timeouts.sum() == 20  # two 300-step episodes per task
    # the stored rewards are the environment's: the family's true reward reproduces them
    from mbml.families import get_family
    fam = get_family(family)
    r = fam.true_reward(ds.tasks[3], np.asarray(ds.observations[3]), np.asarray(ds.actions[3]),
                        ds.next_obs(3), {k: np.asarray(v[3]) for k, v in ds.extras.items()})
    np.testing.assert_allclose(r, ds.rewards[3], rtol=1e-5, atol=1e-5)
    for m in ("full", "neither"):
        ev = io.read_json(out / "seed_0" / "eval" / f"{m}.json")
        assert np.array(ev["test"]["returns"]).shape == (len(fam.test_tasks), 3)
        assert np.isfinite(res["methods"][m]["test"]["mean"])
    assert "oracle" not in res["references"] and np.isfinite(res["references"]["random"]["test"]["mean"])
    assert np.isfinite(res["references"]["zero_action"]["test"]["mean"])
    assert "| zero_action (reference) |" in (out / "report.md").read_text()
    assert (out / "report.md").exists()


@pytest.mark.slow  # 30 tasks x every stage (about 70 s alone); tests/test_next_state.py covers the parts
def test_walker_param_relabels_next_states(tmp_path):
    """walker-param (tasks differ in dynamics) through the ensembles and distillation stages: per-task
    next-state ensembles, the combined filter, and the stored mean next states equal a recomputation."""
    out = tmp_path / "walker-param"
    run_pipeline(out, "walker-param", "smoke", seeds=(0,), methods=("full",), quiet=True, workers=1,
                 stages=("collect", "teachers", "ensembles", "distill"))
    s = out / "seed_0"
    assert preset("walker-param", "smoke").ensemble.next_state and not preset("umaze-goal", "smoke").ensemble.next_state
    with np.load(s / "relabel.npz") as z:
        assert z["next_obs"].shape == (30, 30, 400, 17) and z["next_std"].shape == (30, 30, 400)
        both = accept_mask(z["std"], z["threshold"]) & accept_mask(z["next_std"], z["next_threshold"])
        np.testing.assert_array_equal(z["accept"], both)
        stored = z["next_obs"][:, :, :8]
    rel = io.read_json(s / "relabel.json")
    assert 0.0 < rel["accept_rate"] <= min(rel["accept_rate_reward"], rel["accept_rate_next_state"])
    assert rel["next_state_stored"] == 1.0 and np.isfinite(rel["next_state_heldout_abs_error"])
    assert (s / "students" / "full.msgpack").exists()
    # over the storage budget distillation gets a function recomputing them from the saved ensembles
    with np.load(s / "relabel.npz") as z:
        kept = {name: z[name] for name in z.files if name != "next_obs"}
    np.savez(s / "relabel.npz", **kept)
    ds = load(s / "data", min_tasks=2)
    lab = Run.open(out).relabelling(0, "full", ds)
    assert callable(lab["next_obs"])
    again = lab["next_obs"](ds.observations[:, :8], ds.actions[:, :8])
    np.testing.assert_allclose(again, stored, rtol=1e-4, atol=1e-4)


def test_collection_with_a_tuned_collector_logs_what_each_agent_learned(tmp_path):
    """A smoke collection with the CrossQ critic, 3-step returns and a uniform warm-up (`--set`):
    the dataset as usual, and collect.csv with each task's SAC metrics and episode returns."""
    import csv

    out = tmp_path / "umaze"
    sets = ("sac.critic=crossq", "sac.n_step=3", "sac.warmup=uniform", "sac.adam_b1=0.5")
    run_pipeline(out, "umaze-goal", "smoke", seeds=(0,), methods=("neither",), quiet=True, workers=1,
                 stages=("collect",), overrides=sets)
    ds = load(out / "seed_0" / "data", min_tasks=2)
    assert ds.observations.shape[:2] == (10, 600)
    # the warm-up (300 steps) is uniform: its actions fill [-1, 1] with the std of a uniform (0.577)
    np.testing.assert_allclose(np.asarray(ds.actions[:, :300]).std(), 1 / np.sqrt(3), rtol=0.05)
    with open(out / "seed_0" / "collect.csv") as f:
        rows = list(csv.DictReader(f))
    # a row per task at each horizon (300 steps): steps 300 (warm-up, no updates yet) and 600
    assert [(int(r["step"]), int(r["task"])) for r in rows] == [(s, i) for s in (300, 600) for i in range(10)]
    assert all(r["critic_loss"] == "nan" for r in rows[:10])
    late = rows[10:]
    assert all(np.isfinite(float(r[m])) for r in late for m in ("critic_loss", "alpha", "entropy", "q"))
    returns = np.array([float(r["episode_return"]) for r in late])
    np.testing.assert_allclose(returns, np.asarray(ds.rewards[:, 300:]).sum(1), rtol=1e-4)  # task order
    assert list((out / "seed_0" / "logs" / "collect").glob("events.*"))
