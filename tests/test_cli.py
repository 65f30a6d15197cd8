"""The `mbml` command line on bad input: one line `mbml: error: ...` on stderr, exit status 2, no
traceback, and nothing that existed before is changed. Plus `--help` for every command."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mbml import cli, commands, data as D
from mbml.config import preset
from mbml.pipeline import Run

COMMANDS = {"demo": cli.Demo, "run": cli.RunCmd, **cli.STAGE_CMDS, "sweep": cli.Sweep}


def run_cli(argv, capsys) -> tuple[int, str, str]:
    """`mbml ARGV` in this process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    code = e.value.code
    return (0 if code is None else code), out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("mbml: error: "), err
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


def smoke_folder(out: Path) -> Path:
    """A run folder (config.json only) for point-nav with the smoke preset, made without the CLI."""
    Run.open(out, preset("point-nav", "smoke"))
    assert (out / "config.json").exists()
    return out


def corrupt_folder(out: Path, make_dataset) -> Path:
    """A smoke run folder whose seed-0 dataset (right sizes for point-nav) has a truncated rewards.npy."""
    smoke_folder(out)
    D.save(make_dataset(k=2, n=16, obs_dim=2, act_dim=2, extras=False), out / "seed_0" / "data")
    f = out / "seed_0" / "data" / "rewards.npy"
    f.write_bytes(f.read_bytes()[:-40])
    return out


def assert_unchanged(before: dict[str, bytes], after: dict[str, bytes]) -> None:
    """The same files, byte for byte: nothing added (not even run.json or config.json), removed or changed."""
    assert set(after) - set(before) == set(), f"added: {sorted(set(after) - set(before))}"
    for name, content in before.items():
        assert name in after, f"{name} was removed"
        assert after[name] == content, f"{name} was changed"


# ------------------------------------------------------------------------------- unknown names


@pytest.mark.parametrize("args,fragments", [
    (["run", "--family", "bogus"], ["unknown family 'bogus'", "point-nav"]),
    (["run", "--methods", "full", "bogus"], ["unknown method 'bogus'", "gt_relabel"]),
    (["run", "--preset", "bogus"], ["unknown preset 'bogus'", "smoke"]),
    (["run", "--seeds", "0", "1", "0"], ["seeds repeat"]),
    (["demo", "--methods", "bogus"], ["unknown method 'bogus'"]),
    (["demo", "--preset", "huge"], ["unknown preset 'huge'"]),
])
def test_bad_names_one_line_error_and_no_folder(tmp_path, capsys, args, fragments):
    out = tmp_path / "run"
    code, _, err = run_cli([*args, "--out", out, "--quiet"], capsys)
    assert_one_line_error(code, err, *fragments)
    assert not out.exists()


def test_unknown_family_as_a_subprocess(tmp_path):
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "mbml.cli", "run", "--family", "bogus", "--out", str(out), "--quiet"],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    assert p.stdout == ""
    assert "Traceback" not in p.stderr
    assert p.stderr.endswith("\n") and p.stderr.count("\n") == 1, p.stderr
    assert p.stderr.startswith("mbml: error: unknown family 'bogus'")
    assert not out.exists()


def test_corrupt_dataset_as_a_subprocess(tmp_path, make_dataset, snapshot):
    # only the dataset exists (so that the subprocess compares no config.json, made by the code this
    # session imported, with its own preset): it finds the dataset corrupt before it writes config.json
    out = corrupt_folder(tmp_path / "run", make_dataset)
    (out / "config.json").unlink()
    before = snapshot(out)
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    p = subprocess.run([sys.executable, "-m", "mbml.cli", "run", "--preset", "smoke", "--out", str(out), "--quiet"],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("mbml: error: "), p.stderr
    assert "rewards.npy" in p.stderr, p.stderr
    assert_unchanged(before, snapshot(out))


# ------------------------------------------------------------------------ folders and their state


@pytest.mark.parametrize("args", [
    ["run", "--preset", "demo"],
    ["run", "--preset", "smoke", "--lift", "map"],
    ["run", "--family", "ant-dir", "--preset", "paper"],
    ["teachers", "--preset", "demo"],
    ["collect", "--family", "ant-dir"],
])
def test_folder_made_with_another_config_is_refused(tmp_path, capsys, snapshot, args):
    out = smoke_folder(tmp_path / "run")
    before = snapshot(out)
    code, _, err = run_cli([*args, "--out", out, "--quiet"], capsys)
    line = assert_one_line_error(code, err, str(out))
    assert "different config" in line or "holds a" in line
    assert snapshot(out) == before  # config.json byte for byte, and nothing added


@pytest.mark.parametrize("stage,fragment", [
    ("teachers", "no dataset"), ("ensembles", "no dataset"), ("distill", "no dataset"),
    ("evaluate", "no full student"),
])
def test_stage_on_a_folder_without_dataset(tmp_path, capsys, snapshot, stage, fragment):
    out = smoke_folder(tmp_path / "run")
    before = snapshot(out)
    code, _, err = run_cli([stage, "--out", out, "--quiet"], capsys)
    assert_one_line_error(code, err, fragment)
    assert_unchanged(before, snapshot(out))
    assert not (out / "seed_0" / "data").exists()


@pytest.mark.parametrize("args", [["teachers"], ["ensembles"], ["distill", "--methods", "neither"],
                                  ["run", "--preset", "smoke"]])
def test_corrupt_dataset_in_a_run_folder(tmp_path, capsys, snapshot, make_dataset, args):
    out = corrupt_folder(tmp_path / "run", make_dataset)
    before = snapshot(out)
    code, _, err = run_cli([*args, "--out", out, "--quiet"], capsys)
    assert_one_line_error(code, err, "rewards.npy", "truncated or corrupt")
    assert_unchanged(before, snapshot(out))


def test_dataset_of_the_wrong_family_sizes(tmp_path, capsys, snapshot, make_dataset):
    out = smoke_folder(tmp_path / "run")
    D.save(make_dataset(k=2, n=16, obs_dim=5, act_dim=2, extras=False), out / "seed_0" / "data")
    before = snapshot(out)
    code, _, err = run_cli(["teachers", "--out", out, "--quiet"], capsys)
    assert_one_line_error(code, err, "obs/action sizes 5/2", "2/2")
    assert_unchanged(before, snapshot(out))


def test_failed_stage_command_on_a_new_folder_leaves_nothing(tmp_path, capsys):
    out = tmp_path / "typo"
    code, _, err = run_cli(["teachers", "--out", out, "--quiet"], capsys)
    assert_one_line_error(code, err)
    assert not (out / "config.json").exists()


# -------------------------------------------------------------------------------------- --help


def _flat(text: str) -> str:
    """Help text without rich's box drawing and line wrapping."""
    for ch in "│╭╮╰╯─":
        text = text.replace(ch, " ")
    return " ".join(text.split())


def test_top_level_help_lists_every_command(capsys):
    code, out, _ = run_cli(["--help"], capsys)
    assert code == 0
    for name, cls in COMMANDS.items():
        assert name in out
        assert _flat(cls.__doc__.split(".")[0]) in _flat(out), name


@pytest.mark.parametrize("name", list(COMMANDS))
def test_command_help_mentions_every_option(capsys, name):
    code, out, _ = run_cli([name, "--help"], capsys)
    assert code == 0
    for f in dataclasses.fields(COMMANDS[name]):
        assert f"--{f.name.replace('_', '-')}" in out, f.name


def _field_docs(cls) -> dict[str, str]:
    """The docstring under each field in the class body (what the help should show)."""
    import ast
    import inspect
    import textwrap

    src = textwrap.dedent(inspect.getsource(commands))
    docs, tree = {}, ast.parse(src)
    # the class and its bases (a stage command's fields are written once, in `_stage_cmd`'s StageCmd)
    wanted = {c.__name__ for c in cls.__mro__} | ({"StageCmd"} if hasattr(cls, "stage") else set())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name in wanted:
            body = node.body
            for a, b in zip(body, body[1:]):
                if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant):
                    docs[a.target.id] = b.value.value
    return docs


@pytest.mark.parametrize("name", [
    "demo", "run",
    *cli.STAGE_CMDS, "sweep",
])
def test_command_help_describes_every_option(capsys, name):
    cls = COMMANDS[name]
    docs = _field_docs(cls)
    assert set(docs) == {f.name for f in dataclasses.fields(cls)}
    code, out, _ = run_cli([name, "--help"], capsys)
    assert code == 0
    for field, doc in docs.items():
        first = doc.split(" (")[0].split(":")[0]
        assert _flat(first) in _flat(out), (field, first)


def test_progress_lines_off_a_terminal(capsys):
    """Without a terminal (a log file), progress is a plain line per label at most once a minute,
    with rate and time left, and a line when the label finishes."""
    from mbml.cli import _Bars

    now = [0.0]
    bars = _Bars(quiet=False, clock=lambda: now[0])
    assert not bars.bars  # pytest captures stderr: not a tty
    bars("seed 0 collect", 0, 1000)
    now[0] = 30.0
    bars("seed 0 collect", 100, 1000)  # under a minute since the start: no line
    now[0] = 60.0
    bars("seed 0 collect", 200, 1000)
    now[0] = 300.0
    bars("seed 0 collect", 1000, 1000)
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["  seed 0 collect: 200/1000 (3.33/s, about 4m00s left)", "  seed 0 collect: done 1000/1000 in 5m00s"]

    quiet = _Bars(quiet=True, clock=lambda: now[0])
    quiet("seed 0 teachers", 0, 10)
    now[0] = 1000.0
    quiet("seed 0 teachers", 5, 10)
    quiet("seed 0 teachers", 10, 10)
    assert capsys.readouterr().err.splitlines() == ["  seed 0 teachers: done 10/10 in 11m40s"]


def test_status_reports_each_stage(tmp_path, capsys):
    """`mbml status`: done stages from their outputs, a stage in progress from its progress file and
    heartbeat (running while the heartbeat is fresh, stopped after), the rest pending."""
    import json
    import os

    from mbml.status import run_status

    out = tmp_path / "run"
    d = out / "seed_0"
    (d / "data").mkdir(parents=True)
    (d / "ckpt").mkdir()
    (out / "config.json").write_text("{}")
    (out / "run.json").write_text(json.dumps({"seeds": [0], "methods": ["neither"]}))
    (d / "data" / "meta.json").write_text("{}")
    (d / "timings.json").write_text(json.dumps({"collect": 3725.0}))
    (d / "ckpt" / "teachers.msgpack").write_bytes(b"x")
    (d / "ckpt" / "teachers.progress.json").write_text(json.dumps({"done": 5000, "total": 20000}))
    (d / "ckpt" / "teachers.seconds.json").write_text(json.dumps({"seconds": 61.0}))
    beat = (d / "ckpt" / "teachers.seconds.json").stat().st_mtime
    os.utime(d / "ckpt" / "teachers.seconds.json", (beat, beat))

    rows = {r["stage"]: r for r in run_status(out, now=beat + 10)}
    assert list(rows) == ["collect", "teachers", "distill_neither", "evaluate_neither", "references"]  # no ensembles
    assert rows["collect"]["state"] == "done" and rows["collect"]["seconds"] == 3725.0
    assert (rows["teachers"]["state"], rows["teachers"]["done"], rows["teachers"]["total"]) == ("running", 5000, 20000)
    assert rows["teachers"]["seconds"] == 61.0
    assert rows["distill_neither"]["state"] == "pending"
    (d / "ckpt" / "distill_neither.seconds.json").write_text(json.dumps({"seconds": 30.0}))  # before a checkpoint
    os.utime(d / "ckpt" / "distill_neither.seconds.json", (beat, beat))
    rows = {r["stage"]: r for r in run_status(out, now=beat + 10)}
    assert (rows["distill_neither"]["state"], rows["distill_neither"]["seconds"]) == ("running", 30.0)
    assert {r["stage"]: r for r in run_status(out, now=beat + 1000)}["teachers"]["state"] == "stopped"

    # a stage reads as running from its first moment, before its first checkpoint or heartbeat
    from mbml.pipeline import Run

    with Run(out, None, None).timed(0, "evaluate_neither"):
        assert {r["stage"]: r for r in run_status(out)}["evaluate_neither"]["state"] == "running"
    # a running stage's heartbeat says how far it is now, ahead of its last checkpoint
    (d / "ckpt" / "teachers.seconds.json").write_text(json.dumps({"seconds": 90.0, "done": 6200, "total": 20000}))
    os.utime(d / "ckpt" / "teachers.seconds.json", (beat, beat))
    row = {r["stage"]: r for r in run_status(out, now=beat + 10)}["teachers"]
    assert (row["state"], row["done"], row["total"], row["seconds"]) == ("running", 6200, 20000, 90.0)
    row = {r["stage"]: r for r in run_status(out, now=beat + 1000)}["teachers"]
    assert (row["state"], row["done"]) == ("stopped", 5000)  # a stopped stage resumes from its checkpoint
    run = Run(out, None, None)
    run.HEARTBEAT = 0.02

    def beaten(seen):
        """The running stage's status row once a heartbeat has reported what `seen` looks for
        (a loaded machine may delay the heartbeat thread)."""
        deadline = time.monotonic() + 30
        while True:
            row = {r["stage"]: r for r in run_status(out)}["evaluate_neither"]
            if seen(row) or time.monotonic() > deadline:
                return row
            time.sleep(0.02)

    with run.timed(0, "evaluate_neither"):
        run.bar("seed 0 evaluate")(7, 10)
        row = beaten(lambda row: row.get("done") == 7)
        assert (row["state"], row["done"], row["total"]) == ("running", 7, 10)
        run.bar("seed 0 relabelling")(3, 60)  # a stage in parts (the ensembles stage) names the part
        row = beaten(lambda row: row.get("done") == 3)
        assert (row["part"], row["done"], row["total"]) == ("relabelling", 3, 60)
        capsys.readouterr()
        cli.main(["status", str(out)])
        line = next(x for x in capsys.readouterr().out.splitlines() if "evaluate_neither" in x)
        assert "3/60" in line and line.endswith("(relabelling)"), line
        run.bar("seed 0 evaluate_neither")(4, 60)  # a part that only repeats the stage's name: not shown
        beaten(lambda row: row.get("done") == 4)
        cli.main(["status", str(out)])
        line = next(x for x in capsys.readouterr().out.splitlines() if "evaluate_neither" in x)
        assert "4/60" in line and "(" not in line, line
    (d / "ckpt" / "teachers.seconds.json").write_text(json.dumps({"seconds": 61.0}))
    os.utime(d / "ckpt" / "teachers.seconds.json", (beat, beat))
    capsys.readouterr()
    cli.main(["status", "--out", str(out)])
    text = capsys.readouterr().out
    assert any(line.split()[2:4] == ["collect", "done"] and line.endswith("1h02m") for line in text.splitlines())
    assert any("teachers" in line and "5000/20000" in line for line in text.splitlines())
    cli.main(["status", str(out)])  # the folder as a positional argument too
    assert capsys.readouterr().out == text
    code, _, err = run_cli(["status", "--out", str(tmp_path / "nothing")], capsys)
    assert code != 0 and "not a run folder" in err
    code, _, err = run_cli(["status"], capsys)
    assert code != 0 and "give the run folder" in err


# ------------------------------------------------------------------------------------ --set


@pytest.mark.parametrize("item,fragments", [
    ("sac.bogus=3", ["unknown field 'bogus'", "total_steps"]),
    ("nets.width=3", ["unknown section 'nets'", "distill"]),
    ("sac.total_steps=lots", ["sac.total_steps=lots", "an integer"]),
    ("distill.q_hidden=64,wide", ["a comma list"]),
    ("family=ant-dir", ["unknown field 'family'"]),
    ("lift=sideways", ["choose auto or vmap or map"]),
    ("steps", ["SECTION.FIELD=VALUE"]),
])
def test_bad_set_one_line_error_and_no_folder(tmp_path, capsys, item, fragments):
    out = tmp_path / "run"
    code, _, err = run_cli(["run", "--preset", "smoke", "--set", item, "--out", out, "--quiet"], capsys)
    assert_one_line_error(code, err, *fragments)
    assert not out.exists()


def test_set_is_kept_and_stage_commands_follow_it(tmp_path, capsys, monkeypatch):
    """`mbml run --set` writes the changed config with its overrides; a stage command on the folder
    uses them, and `mbml run` without them is refused with the overrides named."""
    from mbml import io
    from mbml.config import from_dict
    from mbml.errors import MbmlError

    def stop(self, seed, force=False):  # the run stops at its first stage, after config.json and run.json
        raise MbmlError("collection stopped by the test")

    monkeypatch.setattr(Run, "collect", stop)
    out = tmp_path / "run"
    changes = ["sac.total_steps=300", "distill.q_hidden=16,16"]
    code, _, err = run_cli(["run", "--preset", "smoke", "--set", *changes, "--out", out, "--quiet"], capsys)
    assert_one_line_error(code, err, "collection stopped by the test")
    saved = from_dict(io.read_json(out / "config.json"))
    assert saved.sac.total_steps == 300 and saved.distill.q_hidden == (16, 16)
    assert saved.overrides == tuple(changes) and saved.bcq == preset("point-nav", "smoke").bcq
    code, _, err = run_cli(["teachers", "--out", out, "--quiet"], capsys)
    assert_one_line_error(code, err, "no dataset")  # past the config check: it read the overrides
    code, _, err = run_cli(["run", "--preset", "smoke", "--out", out, "--quiet"], capsys)
    assert_one_line_error(code, err, "different config", "--set sac.total_steps=300 distill.q_hidden=16,16")


def test_stage_commands_follow_the_folder_after_its_preset_changed(tmp_path, capsys, make_dataset):
    """A folder made before a preset's defaults changed (config.json differs from today's preset with
    no --set) still runs its stages under its own config; `mbml run` with today's preset refuses it."""
    from mbml import io

    out = corrupt_folder(tmp_path / "run", make_dataset)
    saved = io.read_json(out / "config.json")
    saved["bcq"]["dataset_size"] += 1  # as if the smoke preset had been changed since the folder was made
    io.write_json(out / "config.json", saved)
    code, _, err = run_cli(["teachers", "--out", out, "--quiet"], capsys)
    assert_one_line_error(code, err, "rewards.npy")  # past the config check
    assert io.read_json(out / "config.json") == saved
    code, _, err = run_cli(["run", "--preset", "smoke", "--out", out, "--quiet"], capsys)
    assert_one_line_error(code, err, "different config", "bcq.dataset_size")


def test_a_stage_command_on_a_folder_older_than_a_method_uses_its_presets_section(smoke_full_run, tmp_path, capsys):
    """A folder made before a method's config section existed (here: focal's, removed from config.json)
    gets that section from its preset, in every command: `mbml report` once refused it, comparing the
    section's defaults (read by the command) with the preset's (read by the run folder)."""
    import json
    import shutil

    out = tmp_path / "old"
    shutil.copytree(smoke_full_run, out, ignore=shutil.ignore_patterns("transfer"))
    cfg = json.loads((out / "config.json").read_text())
    del cfg["focal"]
    (out / "config.json").write_text(json.dumps(cfg))
    assert cli.main(["report", "--out", str(out), "--quiet"]) is None
    assert json.loads((out / "config.json").read_text())["focal"]["latent_dim"] == 6  # the toy preset's, not 20
