"""Dropout and the splitting of its random keys through a model."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
    """Inverted dropout; the identity when `key` is None (deterministic) or `rate` is 0."""
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def resolve_dropout_key(rate: float, deterministic: bool,
                        rng: jax.Array | None) -> jax.Array | None:
    """The key dropout should use: None when deterministic, else `rng` (required when `rate`
    is above 0; with rate 0 a given key still reaches adapters with a dropout of their own)."""
    if deterministic:
        return None
    if rng is None and rate > 0.0:
        raise ValueError(f"dropout_rate={rate} with deterministic=False needs dropout_rng "
                         "(a jax.random key); pass one or set deterministic=True.")
    return rng


def split_key(key: jax.Array | None, num: int) -> list[jax.Array | None]:
    """Splits a dropout key into `num` keys, or returns `num` Nones when deterministic."""
    if key is None:
        return [None] * num
    return list(jax.random.split(key, num))
