"""Attention masks from SeqIO batch features, as booleans [b, 1, q, k] (True = may attend).

Segment ids: 0 is padding; a token attends only within its own segment. Masks are turned into
an additive bias once per forward pass (`mask_to_bias`) and shared by every layer.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from flantune.models.attention import MASK_VALUE


def _pairwise(query: jax.Array, key: jax.Array, fn) -> jax.Array:
    return fn(query[:, :, None], key[:, None, :])[:, None]


def padding_mask(query_valid: jax.Array, key_valid: jax.Array) -> jax.Array:
    """Both positions are real tokens; `*_valid` are booleans [b, length]."""
    return _pairwise(query_valid, key_valid, jnp.logical_and)


def segment_mask(query_segments: jax.Array, key_segments: jax.Array) -> jax.Array:
    """Same non-padding segment (packed sequences); segment ids [b, length], 0 = padding."""
    same = _pairwise(query_segments, key_segments, jnp.equal)
    return same & padding_mask(query_segments > 0, key_segments > 0)


def causal_mask(length: int) -> jax.Array:
    """Key index <= query index, [1, 1, length, length]."""
    idx = jnp.arange(length)
    return (idx[None, :] <= idx[:, None])[None, None]


def sliding_window_mask(length: int, window: int) -> jax.Array:
    """Query index - key index < window (Mistral), [1, 1, length, length]."""
    idx = jnp.arange(length)
    return ((idx[:, None] - idx[None, :]) < window)[None, None]


def prefix_mask(causal_attention: jax.Array) -> jax.Array:
    """Bidirectional attention among prefix (inputs) positions: SeqIO's
    `decoder_causal_attention` is 1 on the prefix of each PrefixLM example."""
    prefix = causal_attention.astype(bool)
    return _pairwise(prefix, prefix, jnp.logical_and)


def mask_to_bias(mask: jax.Array, bias: jax.Array | None = None) -> jax.Array:
    """Float32 additive bias: `bias` (or 0) where allowed, MASK_VALUE where masked."""
    base = jnp.zeros((), jnp.float32) if bias is None else bias.astype(jnp.float32)
    return jnp.where(mask, base, jnp.asarray(MASK_VALUE, jnp.float32))


def decoder_only_mask(length: int, *, segment_ids: jax.Array | None,
                      causal_attention: jax.Array | None,
                      sliding_window: int | None) -> jax.Array:
    """Causal (or PrefixLM) self-attention mask, restricted to segments and a sliding window."""
    mask = causal_mask(length)
    if causal_attention is not None:
        mask = mask | prefix_mask(causal_attention)
    if sliding_window is not None:
        mask = mask & sliding_window_mask(length, sliding_window)
    if segment_ids is not None:
        mask = mask & segment_mask(segment_ids, segment_ids)
    return mask


def with_prefix_columns(mask: jax.Array, num_prefix: int, batch: int) -> jax.Array:
    """`mask` [.., q, k] (broadcastable to [batch, 1, q, k]) with `num_prefix` always-allowed
    key columns in front (prefix tuning: every query attends to every prefix slot)."""
    mask = jnp.broadcast_to(mask, (batch, 1, *mask.shape[-2:]))
    allowed = jnp.ones((batch, 1, mask.shape[-2], num_prefix), bool)
    return jnp.concatenate([allowed, mask], axis=-1)
