"""Small building blocks shared by every learner: MLPs, the task-axis lift, soft updates."""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class MLP(nn.Module):
    """ReLU MLP; `out` outputs from a linear head."""

    hidden: Sequence[int]
    out: int

    @nn.compact
    def __call__(self, *inputs):
        x = jnp.concatenate(inputs, axis=-1)
        for h in self.hidden:
            x = nn.relu(nn.Dense(h)(x))
        return nn.Dense(self.out)(x)


AUTO_MAP_WIDTH = 256
"""`auto` lifts with `lax.map` on a CPU when a learner's widest layer has at least this many units."""


def resolve_lift(mode: str, widths=()) -> str:
    """`auto`: `vmap` on an accelerator; on a CPU `vmap` for narrow nets and `lax.map` for nets with a
    layer of `AUTO_MAP_WIDTH` units or more. BCQ teachers measured on the 2-core CPU
    (docs/benchmarks.md): at the toy's 32 units `vmap` ran 1.57x a loop of K learners and `lax.map`
    0.92x; at the `cpu` preset's 256 units `vmap` 0.66x and `lax.map` 0.95x; at the paper's 400-750
    `vmap` 0.85x and `lax.map` 1.02x. On an H200 at the paper's sizes `vmap` ran 3.5x `lax.map`."""
    if mode != "auto":
        return mode
    if jax.default_backend() != "cpu":
        return "vmap"
    return "map" if max(widths, default=0) >= AUTO_MAP_WIDTH else "vmap"


def lift(fn: Callable, mode: str, widths=()) -> Callable:
    """Lift `fn` (written for one task) over a leading task axis of all its arguments.

    `vmap` runs the tasks as one batched program (best on GPU and, for small nets, on CPU too);
    `map` runs them one after another with `lax.map` (less memory, same numbers); `auto` picks one
    from the backend and the nets' layer `widths` (`resolve_lift`).
    """
    mode = resolve_lift(mode, widths)
    if mode == "vmap":
        return jax.vmap(fn)
    if mode == "map":
        return lambda *args: jax.lax.map(lambda a: fn(*a), args)
    raise ValueError(f"unknown lift mode {mode!r}")


def soft_update(target, online, tau: float):
    return jax.tree.map(lambda t, o: (1.0 - tau) * t + tau * o, target, online)


def mse(a, b):
    return jnp.mean(jnp.square(a - b))
