"""Fuzzing (Hypothesis) of what users hand to mbml: dataset folders (`mbml.data.load`), `--set` items
(`mbml.config.override`) and config.json (`mbml.config.from_dict`). Every bad input is a one-line
MbmlError, never another exception.

Derandomized with small example counts, a few seconds in all: the same cases on every run of the same
tests (Hypothesis also draws constants from the modules imported, so one file run alone may try
others). Bad inputs found that way are pinned with `@example`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from mbml import config as C, data as D
from mbml.errors import MbmlError

FUZZ = settings(max_examples=50, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
CHEAP = settings(FUZZ, max_examples=200)
"""For the configs: no files, a fraction of a second for 200 examples."""

FLOATS = ("observations", "actions", "rewards", "final_observations", "tasks", "extra_x_velocity", "extra_xy")
"""Every floating-point array of the base dataset."""
FILES = (*FLOATS, "terminals", "timeouts", "meta")


@pytest.fixture(scope="module")
def base(tmp_path_factory, make_dataset) -> Path:
    """A valid dataset folder (3 tasks, 16 transitions, both extras); each example spoils a copy."""
    path = tmp_path_factory.mktemp("fuzz") / "data"
    D.save(make_dataset(k=3, n=16), path)
    return path


@contextlib.contextmanager
def copy_of(base: Path):
    """A fresh copy of the base folder for one example."""
    with tempfile.TemporaryDirectory(prefix="mbml-fuzz-") as tmp:
        shutil.copytree(base, Path(tmp) / "data")
        yield Path(tmp) / "data"


def file_of(path: Path, name: str) -> Path:
    return path / ("meta.json" if name == "meta" else f"{name}.npy")


def load_fails(path: Path, mmap: bool) -> str:
    """D.load must raise a one-line MbmlError; its message."""
    with pytest.raises(MbmlError) as e:
        D.load(path, mmap=mmap)
    msg = str(e.value)
    assert msg and "\n" not in msg, msg
    return msg


def load_or_one_line_error(path: Path, mmap: bool) -> D.Dataset | None:
    """A spoilt folder may still hold a valid dataset (a byte of data changed to another finite value):
    then it loads and validates; anything else is a one-line MbmlError."""
    try:
        ds = D.load(path, mmap=mmap)
    except MbmlError as e:
        assert str(e) and "\n" not in str(e), str(e)
        return None
    D.validate(ds)
    return ds


def rewrite_meta(path: Path, change) -> None:
    meta = json.loads((path / "meta.json").read_text())
    change(meta)
    (path / "meta.json").write_text(json.dumps(meta))


# ------------------------------------------------------------------------------------- datasets


@FUZZ
@given(name=st.sampled_from(FILES), cut=st.floats(0, 1), mmap=st.booleans())
def test_a_truncated_file_is_a_one_line_error(base, name, cut, mmap):
    with copy_of(base) as path:
        f = file_of(path, name)
        raw = f.read_bytes()
        f.write_bytes(raw[:int(cut * (len(raw) - 2))])  # at least the last 2 bytes go (meta.json ends "}\n")
        msg = load_fails(path, mmap)
        assert f.name in msg, msg


@FUZZ
@given(name=st.sampled_from(FILES), where=st.floats(0, 1), junk=st.binary(min_size=1, max_size=16),
       mmap=st.booleans())
def test_corrupted_bytes_load_or_give_a_one_line_error(base, name, where, junk, mmap):
    with copy_of(base) as path:
        f = file_of(path, name)
        raw = bytearray(f.read_bytes())
        at = int(where * (len(raw) - 1))
        raw[at:at + len(junk)] = junk
        f.write_bytes(bytes(raw[:len(f.read_bytes())]))
        load_or_one_line_error(path, mmap)


@FUZZ
@given(name=st.sampled_from(FLOATS), where=st.floats(0, 1), bad=st.sampled_from([math.nan, math.inf, -math.inf]),
       mmap=st.booleans())
def test_nan_or_inf_in_any_array_is_refused(base, name, where, bad, mmap):
    with copy_of(base) as path:
        f = file_of(path, name)
        arr = np.load(f)
        flat = arr.reshape(-1)
        flat[int(where * (flat.size - 1))] = bad
        np.save(f, arr)  # same shape and dtype: meta.json still agrees
        msg = load_fails(path, mmap)
        assert name in msg and "NaN or infinite" in msg, msg


DTYPES = ("float16", "float32", "float64", "int8", "int32", "int64", "uint8", "bool", "complex64", "<U2")


@FUZZ
@given(name=st.sampled_from(FILES[:-1]), dtype=st.sampled_from(DTYPES), tell_meta=st.booleans(), mmap=st.booleans())
def test_a_wrong_dtype_is_refused(base, name, dtype, tell_meta, mmap):
    with copy_of(base) as path:
        f = file_of(path, name)
        arr = np.load(f)
        if arr.dtype == np.dtype(dtype):
            dtype = "int16"
        np.save(f, np.zeros(arr.shape, dtype))
        if tell_meta:  # meta.json agrees with the file: only the format's dtype table catches it
            rewrite_meta(path, lambda m: m["arrays"][name].update(dtype=str(np.dtype(dtype))))
        assert f.name in load_fails(path, mmap)


@FUZZ
@given(name=st.sampled_from(FILES[:-1]), how=st.sampled_from(["tasks", "transitions", "rank"]),
       delta=st.sampled_from([-1, 1]), tell_meta=st.booleans(), mmap=st.booleans())
def test_a_wrong_shape_is_refused(base, name, how, delta, tell_meta, mmap):
    """Changes that no valid dataset allows: one array with another number of tasks (axis 0) or of
    transitions (axis 1 of the per-step arrays, of final_observations' rows), or with one more or one
    fewer axis (extras may have any trailing shape: only for the others)."""
    with copy_of(base) as path:
        f = file_of(path, name)
        arr = np.load(f)
        shape = list(arr.shape)
        if how == "rank" and not name.startswith("extra_"):
            shape = shape + [1] if delta > 0 else shape[:-1]
        elif how == "transitions" and name != "tasks":
            shape[1] += delta
        else:
            shape[0] += delta
        np.save(f, np.zeros(shape, arr.dtype))
        if tell_meta:
            rewrite_meta(path, lambda m: m["arrays"][name].update(shape=shape))
        load_fails(path, mmap)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=6)


def json_paths(obj, prefix=()):
    """Every path into a JSON value (keys and indices), the root included."""
    yield prefix
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        yield from json_paths(v, (*prefix, k))


@FUZZ
@given(data=st.data(), mmap=st.booleans())
def test_any_value_of_meta_json_replaced_loads_or_is_a_one_line_error(base, data, mmap):
    with copy_of(base) as path:
        meta = json.loads((path / "meta.json").read_text())
        meta = replaced(meta, data.draw(st.sampled_from(sorted(json_paths(meta), key=str))), data.draw(JSON))
        (path / "meta.json").write_text(json.dumps(meta))
        ds = load_or_one_line_error(path, mmap)
        if ds is not None:  # only a harmless change loads: the arrays are still the base's
            np.testing.assert_array_equal(ds.observations, D.load(base).observations)


# ------------------------------------------------------------------------------------------ --set


SMOKE = C.preset("point-nav", "smoke")
KEYS = [f"{s}.{f}" for s, sec in C.SECTIONS.items() for f in (x.name for x in dataclasses.fields(sec))] + ["lift"]
VALUES = (st.text(max_size=12) | st.integers(-10 ** 6, 10 ** 20).map(str) | st.floats().map(repr)
          | st.lists(st.integers(-3, 300), max_size=3).map(lambda v: ",".join(map(str, v)))
          | st.sampled_from(["true", "False", "()", "1e999", "-0", "nan", "inf", "mlp", "map", "4.8e4", "1_000"]))


def override_or_one_line_error(items):
    """override(SMOKE, items) gives a config that survives config.json (to_dict, JSON, from_dict) unchanged,
    or a one-line MbmlError starting `--set`."""
    try:
        cfg = C.override(SMOKE, items)
    except MbmlError as e:
        assert str(e).startswith("--set ") and "\n" not in str(e), str(e)
        return None
    text = json.dumps(C.to_dict(cfg), allow_nan=False)  # config.json is strict JSON
    assert C.from_dict(json.loads(text)) == cfg
    return cfg


@CHEAP
@given(items=st.lists(st.text(max_size=30), min_size=1, max_size=3))
@example(items=["a\nb.c=1"])  # text echoed in an error is escaped: still one line
def test_any_text_given_to_set_is_a_config_or_a_one_line_error(items):
    override_or_one_line_error(items)


@CHEAP
@given(items=st.lists(st.tuples(st.sampled_from(KEYS), VALUES).map("=".join), min_size=1, max_size=4))
@example(items=["sac.policy_hidden=\n"])
@example(items=["sac.critic=ml\np"])
def test_any_value_of_a_real_field_is_a_config_or_a_one_line_error(items):
    cfg = override_or_one_line_error(items)
    if cfg is not None:
        assert cfg.overrides == tuple(items)


def replaced(obj, where, value):
    """`obj` (JSON) with the value at path `where` replaced by `value`."""
    if not where:
        return value
    parent = obj
    for k in where[:-1]:
        parent = parent[k]
    parent[where[-1]] = value
    return obj


@CHEAP
@given(data=st.data())
def test_any_value_of_config_json_replaced_is_a_config_or_a_one_line_error(data):
    stored = json.loads(json.dumps(C.to_dict(SMOKE)))
    stored = replaced(stored, data.draw(st.sampled_from(sorted(json_paths(stored), key=str))), data.draw(JSON))
    try:
        cfg = C.from_dict(stored, "RUN/config.json: ")
    except MbmlError as e:
        assert str(e).startswith("RUN/config.json: ") and "\n" not in str(e), str(e)
        return
    assert C.from_dict(json.loads(json.dumps(C.to_dict(cfg), allow_nan=False))) == cfg
