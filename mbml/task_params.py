"""Task parameters given by hand (`mbml import-minari --tasks`): inline values or a JSON or CSV file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from mbml.errors import MbmlError, one_line


def parse_tasks(given: list[str], dataset_ids: list[str]) -> list[list[float] | None]:
    """Task parameters from `mbml import-minari --tasks`, one entry per dataset id (None: read it
    from the dataset's metadata). `given` is either inline values, one per id in order, each a
    number or numbers separated by commas (`0.5 1.5`, `"0.5,1" "1,2"`), or one `.json` or `.csv`
    file. JSON: a list with one row per id, in order (a row is a number or a list of numbers), or an
    object mapping ids to rows. CSV: one row of numbers per id, in order, or rows whose first cell
    is the id (then in any order); a first row of names is a header and skipped. Files that name
    their ids may leave some out: those tasks fall back to their metadata."""
    if len(given) == 1 and Path(given[0]).suffix.lower() in (".json", ".csv"):
        path = Path(given[0])
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise MbmlError(f"--tasks file {path} cannot be read: {one_line(e)}") from None
        rows = _json_rows(path, text) if path.suffix.lower() == ".json" else _csv_rows(path, text, dataset_ids)
    else:
        rows = [_row(f"--tasks {value!r}", value.split(",")) for value in given]
    if isinstance(rows, dict):
        unknown = [i for i in rows if i not in dataset_ids]
        if unknown:
            raise MbmlError(f"--tasks gives a task for {unknown[0]}, which is not among --ids")
        return [rows.get(i) for i in dataset_ids]
    if len(rows) != len(dataset_ids):
        raise MbmlError(f"--tasks gives {len(rows)} tasks for {len(dataset_ids)} dataset ids")
    return rows


def _row(where: str, cells) -> list[float]:
    """One task's parameters: finite numbers (at least one)."""
    values = cells if isinstance(cells, list) else [cells]
    try:
        row = [float(c) for c in values if isinstance(c, (int, float, str)) and not isinstance(c, bool)]
    except ValueError:
        row = []
    if not row or len(row) != len(values) or not all(np.isfinite(row)):
        raise MbmlError(f"{where}: expected finite numbers, got {cells!r}")
    return row


def _json_rows(path: Path, text: str):
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as e:
        raise MbmlError(f"--tasks file {path} is not JSON: {e}") from None
    if isinstance(rows, dict):
        return {str(i): _row(f"--tasks file {path}, {i}", row) for i, row in rows.items()}
    if not isinstance(rows, list):
        raise MbmlError(f"--tasks file {path}: expected a list of rows or an object of id: row")
    return [_row(f"--tasks file {path}, row {j}", row) for j, row in enumerate(rows)]


def _csv_rows(path: Path, text: str, dataset_ids: list[str]):
    lines = [[c.strip() for c in line] for line in csv.reader(text.splitlines()) if any(c.strip() for c in line)]
    if lines and lines[0][0] not in dataset_ids and not _numbers(lines[0]):
        lines = lines[1:]  # a header
    if lines and lines[0][0] in dataset_ids:
        return {line[0]: _row(f"--tasks file {path}, {line[0]}", line[1:]) for line in lines}
    return [_row(f"--tasks file {path}, row {j + 1}", line) for j, line in enumerate(lines)]


def _numbers(cells: list[str]) -> bool:
    try:
        [float(c) for c in cells]
    except ValueError:
        return False
    return True
