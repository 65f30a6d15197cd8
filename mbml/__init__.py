"""mbml: multi-task batch reinforcement learning with metric learning (Li et al., NeurIPS 2020)."""

__version__ = "0.1.0"

from mbml.errors import MbmlError  # noqa: E402

__all__ = ["MbmlError", "__version__"]
