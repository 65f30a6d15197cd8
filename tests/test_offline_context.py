"""The offline-context protocol (FOCAL's): test-task datasets from `mbml collect-test`, context drawn from them."""

import jax
import numpy as np
import pytest

from mbml import io
from mbml.evaluate import protocol
from mbml.pipeline import Run
from mbml.transitions import device_data


def test_offline_context_needs_test_datasets_then_scores_every_split(smoke_full_run, capsys, snapshot):
    from mbml.cli import main

    before = snapshot(smoke_full_run)
    with pytest.raises(SystemExit):
        main(["evaluate", "--out", str(smoke_full_run), "--protocol", "offline-context", "--quiet"])
    err = capsys.readouterr().err
    assert "mbml collect-test --out" in err and len(err.strip().splitlines()) == 1
    assert snapshot(smoke_full_run) == before  # nothing written

    main(["collect-test", "--out", str(smoke_full_run), "--quiet"])
    run = Run.open(smoke_full_run, create=False)
    test = run.split_dataset(0, "test")
    assert np.array_equal(test.tasks, run.family.test_tasks) and test.num_tasks == 8
    assert test.rewards.shape[1] == run.cfg.sac.total_steps  # the training tasks' collector and budget
    assert "collect_test" in io.read_json(smoke_full_run / "seed_0" / "timings.json")

    students = snapshot(smoke_full_run / "seed_0" / "students")
    main(["evaluate", "--out", str(smoke_full_run), "--protocol", "offline-context", "--quiet"])
    ev = io.read_json(smoke_full_run / "seed_0" / "eval" / "full@offline-context.json")
    assert len(ev["train"]["score"]) == len(run.family.train_tasks) and len(ev["test"]["score"]) == 8
    res = io.read_json(smoke_full_run / "results.json")
    assert res["methods"]["full"]["protocols"]["offline-context"]["test"]["per_seed"] == [np.mean(ev["test"]["score"])]
    assert "offline-context" in (smoke_full_run / "report.md").read_text()
    assert snapshot(smoke_full_run / "seed_0" / "students") == students  # nothing retrained


def test_offline_context_never_reads_the_agents_own_episodes(smoke_full_run):
    """The posteriors come from the offline data alone: on other tasks (other episodes, other returns)
    with the same data and key they are the same; the online protocol's are not."""
    run = Run.open(smoke_full_run, create=False)
    fam, agent, params = run.family, run.agent("full"), run.load_params(0, "full")
    data = {k: v[:2] for k, v in device_data(run.dataset(0)).items()}
    tasks_a = fam.train_tasks[:2]
    tasks_b = fam.test_tasks[:2]
    key = jax.random.PRNGKey(3)
    a = protocol(fam, agent, params, tasks_a, key, run.cfg.eval, offline=data)
    b = protocol(fam, agent, params, tasks_b, key, run.cfg.eval, offline=data)
    assert not np.allclose(a["returns"], b["returns"])
    np.testing.assert_array_equal(a["posterior_means"], b["posterior_means"])
    online_a = protocol(fam, agent, params, tasks_a, key, run.cfg.eval)
    online_b = protocol(fam, agent, params, tasks_b, key, run.cfg.eval)
    assert not np.allclose(online_a["posterior_means"][:, 1:], online_b["posterior_means"][:, 1:])
    # episode i's posterior is that of (i + 1) H drawn transitions: the first equals the agent's posterior of H of them
    assert a["posterior_means"].shape == (2, run.cfg.eval.episodes + 1, agent.latent_dim)


@pytest.mark.slow  # a training run; `scripts/test -m slow`
def test_margin_sweep_distils_each_margin_and_reuses_the_runs_own(smoke_full_run, capsys, snapshot):
    from mbml.cli import main

    students = snapshot(smoke_full_run / "seed_0" / "students")
    main(["margin-sweep", "--out", str(smoke_full_run), "--margins", "0", "2", "--quiet"])
    res = io.read_json(smoke_full_run / "margin_sweep" / "results.json")
    assert res["margins"] == [0.0, 2.0] and set(res["scores"]) == {"0", "2"}
    own = io.read_json(smoke_full_run / "margin_sweep" / "seed_0" / "m2.json")
    ev = io.read_json(smoke_full_run / "seed_0" / "eval" / "full.json")
    assert own["reused"] and own["test"]["score"] == ev["test"]["score"]  # the run's margin is its student
    zero = io.read_json(smoke_full_run / "margin_sweep" / "seed_0" / "m0.json")
    assert not zero["reused"] and len(zero["test"]["score"]) == 8 and zero["test"]["score"] != ev["test"]["score"]
    assert res["scores"]["0"]["test"]["mean"] == np.mean(zero["test"]["score"])
    assert (smoke_full_run / "figures" / "margin_sweep.png").exists()
    assert io.read_json(smoke_full_run / "results.json")["margin_sweep"] == res
    assert "Triplet-margin sweep" in (smoke_full_run / "report.md").read_text()
    assert snapshot(smoke_full_run / "seed_0" / "students") == students  # the run's students untouched
    # a method without the triplet loss: one line, nothing written
    before = snapshot(smoke_full_run)
    with pytest.raises(SystemExit):
        main(["margin-sweep", "--out", str(smoke_full_run), "--method", "neither", "--quiet"])
    assert "no triplet loss" in capsys.readouterr().err and snapshot(smoke_full_run) == before


def test_margin_sweep_refuses_a_folder_without_teachers(tmp_path, capsys):
    from mbml.cli import main

    main(["collect", "--out", str(tmp_path / "r"), "--family", "point-nav", "--preset", "smoke", "--quiet"])
    with pytest.raises(SystemExit):
        main(["margin-sweep", "--out", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err
    assert "no teachers" in err and "mbml teachers --out" in err
    assert not (tmp_path / "r" / "margin_sweep").exists()


@pytest.mark.slow  # a training run; `scripts/test -m slow`
def test_a_method_added_to_a_finished_run_joins_the_others_in_its_report(smoke_full_run, tmp_path):
    import shutil

    from mbml.cli import run_pipeline

    out = tmp_path / "run"
    shutil.copytree(smoke_full_run, out)
    res = run_pipeline(out, "point-nav", "smoke", seeds=(0,), methods=("neither",), quiet=True, workers=1)
    assert list(res["methods"]) == ["full", "neither"]
    assert res["methods"]["full"] == io.read_json(smoke_full_run / "results.json")["methods"]["full"]
