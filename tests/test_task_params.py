"""`mbml import-minari --tasks`: task parameters inline or from a JSON or CSV file, one per dataset
id; every bad input a one-line error."""

from __future__ import annotations

import re

import pytest

from mbml.errors import MbmlError
from mbml.task_params import parse_tasks


@pytest.mark.parametrize("given,file,want", [
    (["0.5", "1.5"], None, [[0.5], [1.5]]),
    (["0.5,1", "1, 2"], None, [[0.5, 1.0], [1.0, 2.0]]),
    (["{f}"], ("t.json", "[0.5, [1, 2.5]]"), [[0.5], [1.0, 2.5]]),
    (["{f}"], ("t.json", '{"b-v0": [3, 4]}'), [None, [3.0, 4.0]]),  # a-v0 falls back to its metadata
    (["{f}"], ("t.csv", "g,h\n1,2\n3,4\n"), [[1.0, 2.0], [3.0, 4.0]]),  # a header, then rows in order
    (["{f}"], ("t.csv", "b-v0,3\na-v0,1\n"), [[1.0], [3.0]]),  # rows named by their ids
    (["{f}"], ("t.CSV", "id,g\nb-v0,3\n"), [None, [3.0]]),
])
def test_parse_tasks(tmp_path, given, file, want):
    if file:
        (tmp_path / file[0]).write_text(file[1])
    given = [g.format(f=tmp_path / file[0]) if file else g for g in given]
    assert parse_tasks(given, ["a-v0", "b-v0"]) == want


@pytest.mark.parametrize("given,file,fragment", [
    (["0.5"], None, "--tasks gives 1 tasks for 2 dataset ids"),
    (["0.5", "x"], None, "--tasks 'x': expected finite numbers"),
    (["0.5", "nan"], None, "--tasks 'nan': expected finite numbers"),
    (["0.5", "1,,2"], None, "expected finite numbers"),
    (["{f}"], ("t.json", "[1, 2, 3]"), "--tasks gives 3 tasks for 2 dataset ids"),
    (["{f}"], ("t.json", '{"c-v0": 1}'), "gives a task for c-v0, which is not among --ids"),
    (["{f}"], ("t.json", "[1, true]"), "row 1: expected finite numbers"),
    (["{f}"], ("t.json", "[1, "), "is not JSON"),
    (["{f}"], ("t.json", '"1"'), "expected a list of rows"),
    (["{f}"], ("t.csv", "1\n2,x\n"), "row 2: expected finite numbers"),
    (["{f}"], None, "cannot be read"),
])
def test_parse_tasks_errors_are_one_line(tmp_path, given, file, fragment):
    if file:
        (tmp_path / file[0]).write_text(file[1])
    given = [g.format(f=tmp_path / (file[0] if file else "missing.json")) for g in given]
    with pytest.raises(MbmlError, match=re.escape(fragment)) as e:
        parse_tasks(given, ["a-v0", "b-v0"])
    assert "\n" not in str(e.value)
