"""The one seam every method provides: infer a task posterior from a context of transitions, and act
given an observation and a task variable (jaxrl2's `Agent`, reduced to what the protocol needs).

The evaluation protocol (`mbml.evaluate.protocol`), the task-inference diagnostic and `mbml compare`
are written once against this interface; a method is an `Agent` plus a trainer, listed once in
`mbml.methods.REGISTRY`.

An agent is a frozen dataclass of static settings (hashable, so it is a static argument under
`jax.jit`); its learned parameters are a separate pytree passed to every call. All functions are
pure and jittable; `act` is written for one observation and lifted by the callers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from mbml import student as S
from mbml.config import DistillConfig


class Agent(Protocol):
    """What the evaluation protocol and the diagnostic need of a method. An agent may also have a
    `prior_std` (float; 1.0 where absent): the protocol's first episode samples z from N(0, prior_std^2 I).
    FOCAL's is 0 (its empty context is z = 0); the product-of-Gaussians encoders keep N(0, I)."""

    latent_dim: int
    """Size of the task variable z."""
    diagnostic_size: int
    """Transitions in a context of the task-inference diagnostic (the training context's length)."""

    def context(self, obs, act, rew, next_obs):
        """Transitions as this agent's encoder reads them: [..., context_dim]."""

    def posterior(self, params, ctx, mask=None):
        """Gaussian over z from the transitions of `ctx` along axis -2 where `mask` holds: (mean, variance),
        each [..., latent_dim]. A deterministic encoder returns a variance of zero."""

    def act(self, params, obs, z, key):
        """The action for one observation [obs] and task variable [latent_dim] (what the protocol runs)."""


@dataclass(frozen=True)
class EncoderAgent:
    """An agent whose posterior is the product of the per-transition Gaussians of an MLP encoder
    (`params.encoder`: PEARL's, MBML's, Contextual BCQ's); subclasses say how it acts (and, where it
    differs, how a transition is laid out for the encoder)."""

    cfg: Any
    """The method's config section: `latent_dim`, `encoder_hidden`, `context_size`."""
    act_dim: int

    @property
    def latent_dim(self) -> int:
        return self.cfg.latent_dim

    @property
    def diagnostic_size(self) -> int:
        return self.cfg.context_size

    def context(self, obs, act, rew, next_obs):
        return S.context(obs, act, rew, next_obs)

    def posterior(self, params, ctx, mask=None):
        return S.posterior(*S.encode(self.cfg, params.encoder, ctx), mask)

    def act(self, params, obs, z, key):
        raise NotImplementedError


@dataclass(frozen=True)
class StudentAgent(EncoderAgent):
    """The MBML student (every variant: the switches change training, not acting): BCQ action
    selection through the distilled Q, G and xi (Fig. 3)."""

    cfg: DistillConfig
    phi: float = 0.05
    num_candidates: int = 10

    @property
    def diagnostic_size(self) -> int:
        return 2 * self.cfg.context_size  # own + relabelled, or the methods without relabelling's own

    def act(self, params: S.Student, obs, z, key):
        return S.act(self.cfg, self.act_dim, self.phi, self.num_candidates, params, obs, z, key)
