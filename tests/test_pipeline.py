"""Smoke test of every stage, resume after an interruption, and a regression test of the toy pipeline.

The regression reference `tests/data/smoke_regression.json` was produced by
`python tests/test_pipeline.py --update` on a 2-core CPU (same XLA flags as the tests).
"""

from __future__ import annotations

import json
import os
import sys

if __name__ == "__main__":  # same XLA flags as under pytest (tests/conftest.py), set before JAX starts
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
from pathlib import Path

import numpy as np
import pytest

from mbml import io
from mbml.cli import run_pipeline
from mbml.config import preset
from mbml.data import load
from mbml.pipeline import Run

REFERENCE = Path(__file__).parent / "data" / "smoke_regression.json"
from mbml.methods import REGISTRY

METHODS = tuple(REGISTRY)  # every registered method: the MBML variants and the baselines


def _smoke(out: Path) -> dict:
    return run_pipeline(out, "point-nav", "smoke", seeds=(0,), methods=METHODS, quiet=True, workers=1)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke") / "run"
    return out, _smoke(out)


def test_every_stage_writes_its_outputs(smoke_run):
    out, res = smoke_run
    s = out / "seed_0"
    ds = load(s / "data", min_tasks=2)
    cfg = preset("point-nav", "smoke")
    assert ds.observations.shape == (10, cfg.sac.total_steps, 2)
    assert ds.timeouts.sum() == 10 * cfg.sac.total_steps // 20 and not ds.terminals.any()
    teach = io.read_json(s / "teachers.json")
    assert np.array(teach["eval_curve"]).shape == (4, 10)
    rel = io.read_json(s / "relabel.json")
    assert 0.0 < rel["accept_rate"] < 1.0 and rel["abs_error_accepted"] < rel["reward_std"]
    for m in METHODS:
        assert (s / "students" / f"{m}.msgpack").exists()
        ev = io.read_json(s / "eval" / f"{m}.json")
        latent = getattr(cfg, REGISTRY[m].section).latent_dim
        assert np.array(ev["test"]["returns"]).shape == (8, 5)
        np.testing.assert_allclose(ev["test"]["last_episode"], np.array(ev["test"]["returns"])[:, -1], rtol=1e-6)
        assert np.array(ev["test"]["posterior_means"]).shape == (8, 6, latent)
        for v in ev["diagnostic"].values():  # counts of 16 draws x 10 x 9 ordered pairs (tests/test_protocol.py
            assert 0.0 <= v <= 1.0 and v * 1440 == pytest.approx(round(v * 1440), abs=1e-3)  # checks the values)
        section = getattr(cfg, REGISTRY[m].section)
        evals = -(-section.steps // section.eval_every)
        assert len((s / "students" / f"{m}.csv").read_text().splitlines()) == 1 + evals  # header + evaluations
    for f in ("results.json", "report.md", "config.json", "run.json"):
        assert (out / f).exists()
    for f in ("datasets", "scores", "curves", "posteriors", "diagnostic"):
        assert (out / "figures" / f"{f}.png").stat().st_size > 10_000
    assert not any((s / "ckpt").iterdir())  # checkpoints removed once stages finish


def test_results_json_contract(smoke_run):
    out, res = smoke_run
    assert json.loads(json.dumps(res)) == json.loads((out / "results.json").read_text())
    assert {"schema", "family", "preset", "seeds", "config", "methods", "references", "relabel", "timings",
            "peak_rss_mb", "versions"} <= set(res)
    assert res["schema"] == 2
    seed_peak = json.loads((out / "seed_0" / "memory.json").read_text())["peak_rss_mb"]
    assert 50 < seed_peak <= res["peak_rss_mb"]  # the stages' peak is kept for reports made by another process
    for m in METHODS:
        for split in ("test", "train"):
            v = res["methods"][m][split]
            assert {"mean", "ci95", "per_seed", "per_task", "per_seed_task", "last_episode"} <= set(v)
            assert v["ci95"] == [v["mean"], v["mean"]]  # one seed: no interval to give
            assert len(v["per_task"]) == (8 if split == "test" else 10)
            assert np.mean(v["per_seed_task"]) == pytest.approx(v["mean"])
        assert res["methods"][m]["kind"] == ("mbml" if REGISTRY[m].is_student else "baseline")
        curve = res["methods"][m]["curve"]
        assert len(curve["step"]) == len(curve["test_score"][0]) and np.shape(curve["test_score"])[0] == 1
    refs = res["references"]
    assert refs["oracle"]["test"]["mean"] > refs["random"]["test"]["mean"]
    assert len(refs["teachers"]["train"]["per_task"]) == 10
    assert {"accept_rate", "abs_error_accepted"} <= set(res["relabel"])
    assert {"collect", "teachers", "ensembles", "distill_full", "evaluate_full", "references"} <= set(res["timings"])


def test_rerun_skips_finished_stages(smoke_run):
    out, _ = smoke_run
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.msgpack")}
    _smoke(out)
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("*.msgpack")}


class Stop(Exception):
    pass


@pytest.mark.parametrize("method", ["full", "contextual_bcq", "batch_pearl"])
def test_interrupted_distillation_resumes_to_the_same_student(smoke_run, tmp_path, method):
    """Kill a method's training after its first chunk; running again continues from the checkpoint
    and ends with exactly the student (or baseline agent) an uninterrupted run gives."""
    done, _ = smoke_run
    out = tmp_path / "run"
    (out / "seed_0").mkdir(parents=True)
    for f in ("data", "teachers.json", "teachers.msgpack", "relabel.json", "relabel.npz", "ensembles.msgpack"):
        src = done / "seed_0" / f
        dst = out / "seed_0" / f
        if src.is_dir():
            import shutil
            shutil.copytree(src, dst)
        else:
            dst.write_bytes(src.read_bytes())

    def stop_after_first_chunk(label, d, total):
        if 0 < d < total:
            raise Stop

    cfg = preset("point-nav", "smoke")
    with pytest.raises(Stop):
        Run.open(out, cfg, stop_after_first_chunk).distill(0, method)
    assert (out / "seed_0" / "ckpt" / f"{REGISTRY[method].step}.msgpack").exists()
    assert not (out / "seed_0" / "students" / f"{method}.msgpack").exists()
    Run.open(out, cfg).distill(0, method)
    assert ((out / "seed_0" / "students" / f"{method}.msgpack").read_bytes()
            == (done / "seed_0" / "students" / f"{method}.msgpack").read_bytes())


def _evaluate_first_part_only(out: Path, cfg, monkeypatch) -> None:
    """Run seed 0's `full` evaluation and stop it when it starts its second part."""
    protocol, calls = Run.evaluate_agent, []

    def first_only(self, *args):
        calls.append(1)
        if len(calls) > 1:
            raise Stop
        return protocol(self, *args)

    monkeypatch.setattr(Run, "evaluate_agent", first_only)
    with pytest.raises(Stop):
        Run.open(out, cfg).evaluate(0, "full")
    monkeypatch.setattr(Run, "evaluate_agent", protocol)


def test_interrupted_evaluation_keeps_its_finished_parts(smoke_run, tmp_path, monkeypatch):
    """Stop the evaluation (and the references) after their first part: running again redoes only
    what was left and writes exactly the file an uninterrupted evaluation wrote."""
    import shutil
    import time

    from mbml import pipeline as P
    from mbml.status import run_status

    done, _ = smoke_run
    out = tmp_path / "run"
    shutil.copytree(done, out)
    for f in ("eval/full.json", "eval/references.json"):
        (out / "seed_0" / f).unlink()
    cfg = preset("point-nav", "smoke")
    protocol, own = Run.evaluate_agent, P.evaluate_own_tasks
    _evaluate_first_part_only(out, cfg, monkeypatch)
    parts = json.loads((out / "seed_0" / "ckpt" / "evaluate_full.parts.json").read_text())
    assert list(parts["parts"]) == ["train"]
    row = {r["stage"]: r for r in run_status(out, now=time.time() + 1000)}["evaluate_full"]  # heartbeat gone stale
    assert (row["state"], row["done"], row["total"]) == ("stopped", 1, 3)

    calls = []
    monkeypatch.setattr(P, "evaluate_own_tasks", lambda *a: calls.append("own") or own(*a))

    def stop(*args):
        raise Stop

    monkeypatch.setattr(P.rollout, "reference_scores", stop)
    with pytest.raises(Stop):
        Run.open(out, cfg).references(0)
    assert calls == ["own"]
    monkeypatch.undo()

    spy = []
    monkeypatch.setattr(Run, "evaluate_agent", lambda self, *a: spy.append(1) or protocol(self, *a))
    monkeypatch.setattr(P, "evaluate_own_tasks", lambda *a: spy.append("own") or own(*a))
    run = Run.open(out, cfg)
    run.evaluate(0, "full")
    run.references(0)
    assert spy == [1]  # the test split only; the teachers' own-task scores were kept too
    for f in ("eval/full.json", "eval/references.json"):
        assert (out / "seed_0" / f).read_bytes() == (done / "seed_0" / f).read_bytes()
    assert not list((out / "seed_0" / "ckpt").glob("*")), "finished evaluations leave no parts"


def test_kept_evaluation_parts_of_another_student_are_dropped(smoke_run, tmp_path, monkeypatch):
    """An evaluation stopped after its first part, then the student trained again (here: changed):
    the next evaluation computes every part for the new student instead of mixing in the old one's."""
    import shutil

    import jax

    done, _ = smoke_run
    out = tmp_path / "run"
    shutil.copytree(done, out)
    (out / "seed_0" / "eval" / "full.json").unlink()
    cfg = preset("point-nav", "smoke")
    protocol, calls = Run.evaluate_agent, []
    _evaluate_first_part_only(out, cfg, monkeypatch)
    path = out / "seed_0" / "students" / "full.msgpack"
    run = Run.open(out, cfg)
    tree = io.load_pytree(path, {"params": run.params_template("full"), "qnorm": np.zeros(2, np.float32)})
    io.save_pytree(path, jax.tree_util.tree_map(lambda x: np.asarray(x) * 0.5, tree))
    monkeypatch.setattr(Run, "evaluate_agent", lambda self, *a: calls.append(1) or protocol(self, *a))
    run.evaluate(0, "full")
    assert calls == [1, 1]  # train and test, both for the changed student


def _summary(res: dict) -> dict:
    return {m: {"test": v["test"]["mean"], "train": v["train"]["mean"]} for m, v in res["methods"].items()} | {
        "teachers": res["references"]["teachers"]["train"]["mean"], "accept_rate": res["relabel"]["accept_rate"]}


def test_protocol_repeats_are_averaged(tmp_path):
    """`eval.repeats` runs of the protocol per task with keys key, fold_in(key, 1), ...: their mean."""
    import jax
    import jax.numpy as jnp

    from mbml.evaluate import protocol

    cfg = preset("point-nav", "smoke")
    assert cfg.eval.repeats == 2
    run = Run.open(tmp_path / "run", cfg)
    params, key = run.params_template("full"), jax.random.PRNGKey(3)
    got = run.evaluate_agent("full", params, run.family.test_tasks, key)
    tasks = jnp.asarray(run.family.test_tasks, jnp.float32)
    each = [protocol(run.family, run.agent("full"), params, tasks, k, cfg.eval)
            for k in (key, jax.random.fold_in(key, 1))]
    np.testing.assert_allclose(got["score"], (np.asarray(each[0]["score"]) + np.asarray(each[1]["score"])) / 2,
                               rtol=1e-6)
    np.testing.assert_array_equal(got["posterior_means"], np.asarray(each[0]["posterior_means"]))


def test_runs_table_has_a_row_per_run_and_method(smoke_run):
    from mbml.report import ci95, runs_table

    _, res = smoke_run
    rows = runs_table([res, res]).splitlines()[2:]
    assert len(rows) == 2 * len(res["methods"])
    m, v = next(iter(res["methods"].items()))
    assert f"`{m}`" in rows[0] and f"{v['test']['mean']:.2f}" in rows[0] and "`point-nav` | smoke |" in rows[0]
    assert f"{v['test']['mean']:.2f} (one seed) |" in rows[0]  # one seed: no interval, not [x, x]
    two = {**v, "test": {**v["test"], "per_seed": [1.0, 3.0], "mean": 2.0, "ci95": ci95([1.0, 3.0])}}
    assert "| 2.00 [-10.71, 14.71] |" in runs_table([{**res, "methods": {m: two}}]).splitlines()[2]
    cfg = res["config"]
    changed = {**res, "config": {**cfg, "sac": {**cfg["sac"], "total_steps": 20}, "overrides": ["sac.total_steps=20"]}}
    assert "| smoke + `sac.total_steps=20` |" in runs_table([changed]).splitlines()[2]
    # a run made before its preset changed says how it differs from the preset today
    older = {**res, "config": {**cfg, "bcq": {**cfg["bcq"], "steps": cfg["bcq"]["steps"] + 1}}}
    assert f"| smoke (older preset: `bcq.steps={cfg['bcq']['steps'] + 1}`) |" in runs_table([older]).splitlines()[2]


def test_gallery_keeps_results_and_the_table_reads_them_back(smoke_run, tmp_path, capsys):
    """The gallery copies each run's figures and results.json; the runs table can be remade from
    those copies after the run folder is gone."""
    from mbml.report import gallery, main

    out, res = smoke_run
    md = gallery([out], tmp_path / "g", link_prefix="g/")
    kept = tmp_path / "g" / "point-nav-smoke"
    assert (kept / "results.json").exists() and 'src="g/point-nav-smoke/' in md
    assert sorted(p.name for p in kept.glob("*.png")) == sorted(p.name for p in (out / "figures").glob("*.png"))
    main([str(out), str(kept / "results.json")])
    rows = capsys.readouterr().out.splitlines()[2:]
    assert len(rows) == 2 * len(res["methods"]) and rows[0] == rows[len(res["methods"])]
    main(["--rows", str(kept / "results.json")])
    assert capsys.readouterr().out.splitlines()[2:] == rows[:len(res["methods"])]


def test_regression_against_committed_result(smoke_run):
    """Same seed, same machine type: the smoke pipeline's scores match the committed ones."""
    _, res = smoke_run
    ref = json.loads(REFERENCE.read_text())
    got = _summary(res)
    assert got.keys() == ref.keys()
    for k, v in ref.items():
        if isinstance(v, dict):
            for split in v:
                assert abs(got[k][split] - v[split]) < 0.01, (k, split, got[k][split], v[split])
        else:
            assert abs(got[k] - v) < 1e-3 * max(1.0, abs(v)), (k, got[k], v)


if __name__ == "__main__" and "--update" in sys.argv:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        io.write_json(REFERENCE, _summary(_smoke(Path(d) / "run")))
    print(REFERENCE.read_text())
