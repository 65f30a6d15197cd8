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
