"""The whole pipeline on a MuJoCo family (host-stepped environments), at the smoke budget."""

from __future__ import annotations

import numpy as np
import pytest

from mbml import io
from mbml.cli import run_pipeline
from mbml.data import load


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
                        np.asarray(ds.next_observations[3]), {k: np.asarray(v[3]) for k, v in ds.extras.items()})
    np.testing.assert_allclose(r, ds.rewards[3], rtol=1e-5, atol=1e-5)
    for m in ("full", "neither"):
        ev = io.read_json(out / "seed_0" / "eval" / f"{m}.json")
        assert np.array(ev["test"]["returns"]).shape == (len(fam.test_tasks), 3)
        assert np.isfinite(res["methods"][m]["test"]["mean"])
    assert "oracle" not in res["references"] and np.isfinite(res["references"]["random"]["test"]["mean"])
    assert (out / "report.md").exists()
