"""One compiled forward pass per input signature, so tests don't pay eager per-op dispatch."""

from __future__ import annotations

import functools

import jax
import numpy as np
from flax import nnx


@functools.partial(nnx.jit, static_argnames=("deterministic",))
def _forward(model: nnx.Module, *args: jax.Array, deterministic: bool = True,
             **kwargs: jax.Array | None) -> jax.Array:
    return model(*args, deterministic=deterministic, **kwargs)


def forward(model: nnx.Module, *args, deterministic: bool = True, **kwargs) -> np.ndarray:
    """`model(*args, **kwargs)` under jit, as a numpy array."""
    return np.asarray(_forward(model, *args, deterministic=deterministic, **kwargs))
