"""Registry of task families by name."""

from __future__ import annotations

import importlib

from mbml.errors import MbmlError
from mbml.families.base import Family, JaxEnv, data_family

# name -> "module:attribute" of a zero-argument function returning the Family (imported lazily so
# the toy never imports MuJoCo).
_REGISTRY: dict[str, str] = {
    "point-nav": "mbml.families.point_nav:family",
    "ant-dir": "mbml.families.mujoco:ant_dir",
    "ant-goal": "mbml.families.mujoco:ant_goal",
    "halfcheetah-vel": "mbml.families.mujoco:halfcheetah_vel",
    "humanoid-dir": "mbml.families.mujoco:humanoid_dir",
    "walker-param": "mbml.families.mujoco:walker_param",
    "umaze-goal": "mbml.families.mujoco:umaze_goal",
}

FAMILIES = tuple(_REGISTRY)


def get_family(name: str) -> Family:
    """The family called `name`; a one-line MbmlError for an unknown or not yet available one."""
    if name not in _REGISTRY:
        raise MbmlError(f"unknown family {name!r}; choose one of: {', '.join(FAMILIES)}")
    if name not in _CACHE:  # one object per family: families are static arguments of jitted code
        module, attr = _REGISTRY[name].split(":")
        try:
            factory = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise MbmlError(f"family {name!r} is not available in this installation ({e})") from None
        _CACHE[name] = factory()
    return _CACHE[name]


_CACHE: dict[str, Family] = {}


__all__ = ["FAMILIES", "Family", "JaxEnv", "data_family", "get_family"]
