"""Choosing the next token from logits: greedy, or sampling with temperature, top-k and top-p.

Written here rather than taken from a library: optax / flax have no sampling filters, and these
run inside the jitted decoding loop on [batch, vocab] arrays.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from flantune.decoding.config import DecodeConfig


def top_k_filter(logits: jax.Array, k: int) -> jax.Array:
    """-inf everywhere but the k largest logits of each row (ties at the k-th value kept)."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = jax.lax.top_k(logits, k)[0][..., -1:]
    return jnp.where(logits < kth, -jnp.inf, logits)


def top_p_filter(logits: jax.Array, p: float) -> jax.Array:
    """Nucleus filter: keeps the most probable tokens whose cumulative probability first reaches
    `p` (a token is kept when the mass of the tokens ranked above it is below `p`)."""
    if p >= 1.0:
        return logits
    order = jnp.argsort(-logits, axis=-1)
    sorted_probs = jnp.take_along_axis(jax.nn.softmax(logits, axis=-1), order, axis=-1)
    mass_above = jnp.cumsum(sorted_probs, axis=-1) - sorted_probs
    keep_sorted = mass_above < p
    keep = jnp.zeros_like(keep_sorted).at[
        jnp.arange(logits.shape[0])[:, None], order].set(keep_sorted)
    return jnp.where(keep, logits, -jnp.inf)


def filtered_logits(logits: jax.Array, config: DecodeConfig) -> jax.Array:
    """Temperature, then top-k, then top-p (the order Hugging Face applies them)."""
    logits = logits / config.temperature
    logits = top_k_filter(logits, config.top_k)
    return top_p_filter(logits, config.top_p)


def choose_tokens(logits: jax.Array, config: DecodeConfig, key: jax.Array) -> jax.Array:
    """Next tokens [b] (int32): argmax for greedy (or temperature 0), else a sample."""
    if config.method == "greedy" or config.temperature == 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return jax.random.categorical(key, filtered_logits(logits, config)).astype(jnp.int32)
