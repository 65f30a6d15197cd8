"""A config as JSON (config.json, results.json), `--set` changes, and how a stored config differs from
its preset today (`drift`)."""

from __future__ import annotations

import dataclasses
import typing

from mbml.config import METHODS, SECTIONS, Lift, RunConfig
from mbml.config_rules import shown
from mbml.errors import MbmlError


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(d: dict, where: str = "") -> RunConfig:
    """The RunConfig of `to_dict(cfg)` as read back from JSON (config.json): fields it lacks take their
    defaults; an unknown field or a value out of range (RULES) is a one-line MbmlError starting `where`."""
    def plain(v):  # JSON lists back to tuples
        return tuple(v) if isinstance(v, list) else v

    try:
        if not isinstance(d, dict):
            raise MbmlError(f"expected a table of config fields, got {shown(d)}")
        kw = {}
        for k, v in d.items():
            if k not in {f.name for f in dataclasses.fields(RunConfig)}:
                raise MbmlError(f"unknown config field {k!r}")
            if k in SECTIONS:
                if not isinstance(v, dict):
                    raise MbmlError(f"{k}={shown(v)}: must be a table of its fields")
                unknown = sorted(set(v) - {f.name for f in dataclasses.fields(SECTIONS[k])})
                if unknown:
                    raise MbmlError(f"unknown config field '{k}.{unknown[0]}'")
                v = SECTIONS[k](**{kk: plain(vv) for kk, vv in v.items()})
            kw[k] = plain(v)
        return RunConfig(**kw)
    except MbmlError as e:
        raise MbmlError(f"{where}{e}") from None


def read(path) -> RunConfig:
    """A run folder's config.json, checked as `from_dict` checks it (errors name the file)."""
    from mbml.io import read_json

    return from_dict(read_json(path), f"{path}: ")


def check_method(name: str) -> str:
    if not isinstance(name, str) or name not in METHODS:
        raise MbmlError(f"unknown method {name!r}; choose from: {', '.join(METHODS)}")
    return name


_SECTIONS = tuple(SECTIONS)


def _parse(key: str, text: str, old):
    """`text` as a value of the type of `old` (the preset's value of `key`)."""
    kind = type(old)
    try:
        if isinstance(old, bool):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return text.lower() in ("true", "1")
        if isinstance(old, tuple):  # network widths: 256,256 (or (256, 256); () for none)
            items = [t for t in text.strip("()[] ").replace(" ", "").split(",") if t]
            elem = type(old[0]) if old else int
            return tuple(elem(t) for t in items)
        if old is None or isinstance(old, str):
            return None if text == "None" else text
        if isinstance(old, int):  # 48000, 48_000 or 4.8e4
            value = float(text)
            if value != int(value):
                raise ValueError
            return int(value)
        return kind(text)
    except (ValueError, OverflowError):  # OverflowError: int(float("1e999"))
        what = {bool: "true or false", int: "an integer", float: "a number"}.get(kind, "a comma list of numbers")
        raise MbmlError(f"--set {shown(key)}={shown(text)}: expected {what}, like {old!r}") from None


def override(cfg: RunConfig, items) -> RunConfig:
    """`cfg` with each `section.field=value` of `items` applied (`mbml run --set`), e.g.
    `sac.total_steps=10000`, `distill.q_hidden=128,128`, `lift=map`; recorded in `cfg.overrides`.
    Each section changes once, with all its items, so ranges tying two fields see the values given."""
    changes: dict[str, dict] = {}  # section ("": the top level) -> {field: value}
    for item in items:
        key, eq, text = item.partition("=")
        if not eq or not key:
            raise MbmlError(f"--set {item!r}: expected SECTION.FIELD=VALUE, e.g. distill.steps=48000")
        section, _, name = key.rpartition(".")
        if section and section not in _SECTIONS:
            raise MbmlError(f"--set {shown(key)}: unknown section {section!r}; choose from: {', '.join(_SECTIONS)}")
        target = getattr(cfg, section) if section else cfg
        names = [f.name for f in dataclasses.fields(target)
                 if section or f.name not in ("family", "preset", "overrides", *_SECTIONS)]
        if name not in names:
            raise MbmlError(f"--set {shown(key)}: unknown field {name!r}; {section or 'the top level'} has: "
                            f"{', '.join(names)}")
        value = _parse(key, text, getattr(target, name))
        if key == "lift" and value not in typing.get_args(Lift):  # the one Literal field
            raise MbmlError(f"--set lift={shown(text)}: choose {' or '.join(typing.get_args(Lift))}")
        changes.setdefault(section, {})[name] = value
    for section, values in changes.items():
        try:
            cfg = dataclasses.replace(cfg, **({section: dataclasses.replace(getattr(cfg, section), **values)}
                                             if section else values))
        except MbmlError as e:  # out of range: the field given, or one whose range a given field sets
            field_name = str(e).partition("=")[0].rpartition(".")[2]
            given = " ".join(shown(i) for i in items if i.partition("=")[0].rpartition(".")[0] == section)
            raise MbmlError(f"--set {e}" if field_name in values else f"--set {given}: {e}") from None
    return dataclasses.replace(cfg, overrides=cfg.overrides + tuple(items)) if items else cfg


def drift(stored: dict) -> list[str]:
    """`section.field=value` for every field where a run's stored config (config.json, or results.json's
    `config`) differs from what its preset, with its `--set` overrides, gives today: how a run made
    before a preset changed differs from a run made now. A field added since the run was made counts
    with its default (what resuming the run uses); fields either side lacks otherwise are skipped."""
    from mbml.presets import preset

    try:
        now = to_dict(override(preset(stored["family"], stored["preset"]), stored.get("overrides", [])))
    except (KeyError, MbmlError):
        return []
    try:  # the stored config as the run uses it: fields it lacks take their defaults
        stored = {**stored, **{k: v for k, v in to_dict(from_dict(stored)).items() if k in SECTIONS}}
    except (MbmlError, TypeError):
        pass
    out = []
    for key, value in stored.items():
        if key in ("family", "preset", "overrides") or key not in now:
            continue
        if key == "lift" and now[key] == "auto":  # auto: a choice of how, which a folder keeps (RunFolder.open)
            continue
        pairs = value.items() if isinstance(value, dict) else [(None, value)]
        for name, v in pairs:
            current = now[key] if name is None else now[key].get(name, v)
            if _plain(v) != _plain(current):
                shown = ",".join(map(str, v)) if isinstance(v, (list, tuple)) else v
                out.append(f"{key}.{name}={shown}" if name else f"{key}={shown}")
    return out


def _plain(value):
    """Tuples as lists, as they come back from JSON."""
    return list(value) if isinstance(value, (list, tuple)) else value
