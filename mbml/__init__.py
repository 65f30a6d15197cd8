"""mbml: multi-task batch reinforcement learning with metric learning (Li et al., NeurIPS 2020)."""

__version__ = "0.1.0"

from mbml.errors import MbmlError  # noqa: E402
from mbml.registration import register as _register  # noqa: E402

_register()  # every family's gymnasium id, with string entry points: gymnasium.register_envs(mbml)

__all__ = ["MbmlError", "__version__"]
