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


def lift(fn: Callable, mode: str) -> Callable:
    """Lift `fn` (written for one task) over a leading task axis of all its arguments.

    `vmap` runs the tasks as one batched program (best on GPU and, for small nets, on CPU too);
    `map` runs them one after another with `lax.map` (less memory, same numbers).
    """
    if mode == "vmap":
        return jax.vmap(fn)
    if mode == "map":
        return lambda *args: jax.lax.map(lambda a: fn(*a), args)
    raise ValueError(f"unknown lift mode {mode!r}")


def soft_update(target, online, tau: float):
    return jax.tree.map(lambda t, o: (1.0 - tau) * t + tau * o, target, online)


def mse(a, b):
    return jnp.mean(jnp.square(a - b))
