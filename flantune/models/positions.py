"""Position encodings: T5 relative position buckets and rotary embeddings (RoPE)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flantune.models.config import RopeScaling
from flantune.models.layers import logical_param


def relative_position_bucket(relative_position: np.ndarray, *, bidirectional: bool,
                             num_buckets: int, max_distance: int) -> np.ndarray:
    """T5's bucketing of `key_position - query_position`, in float32 numpy.

    Exact for small distances, logarithmic up to `max_distance`, then clipped. Evaluated once per
    possible distance (a small table), mirroring the float32 arithmetic of the reference so bucket
    edges land identically.
    """
    relative_position = np.asarray(relative_position, dtype=np.int64)
    buckets = np.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets += (relative_position > 0).astype(np.int64) * num_buckets
        distance = np.abs(relative_position)
    else:
        distance = -np.minimum(relative_position, 0)
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    with np.errstate(divide="ignore"):
        scaled = (np.log(distance.astype(np.float32) / np.float32(max_exact))
                  / np.float32(math.log(max_distance / max_exact))
                  * np.float32(num_buckets - max_exact))
    large = max_exact + np.where(is_small, 0, scaled).astype(np.int64)
    large = np.minimum(large, num_buckets - 1)
    return buckets + np.where(is_small, distance, large)


class RelativePositionBias(nnx.Module):
    """Learned per-head bias indexed by relative position bucket; table [buckets, heads]."""

    def __init__(self, num_buckets: int, max_distance: int, num_heads: int, *, bidirectional: bool,
                 param_dtype: jnp.dtype, rngs: nnx.Rngs):
        init = nnx.initializers.variance_scaling(1.0, "fan_avg", "uniform")
        self.embedding = logical_param(rngs, init, (num_buckets, num_heads),
                                       ("relpos_buckets", "heads"), param_dtype)
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.bidirectional = bidirectional

    def __call__(self, query_positions: jax.Array | None, key_positions: jax.Array | None,
                 query_length: int, key_length: int) -> jax.Array:
        """Returns a float32 bias [b or 1, heads, q, k].

        Without explicit positions, positions are 0..length-1 and the bias is shared over the
        batch. With positions (packed sequences restart them per segment), each row gets its own.
        """
        # Every relative position lies in [-(query_length - 1), key_length - 1]: one table lookup.
        offsets = np.arange(-(query_length - 1), key_length)
        table = jnp.asarray(relative_position_bucket(
            offsets, bidirectional=self.bidirectional, num_buckets=self.num_buckets,
            max_distance=self.max_distance), dtype=jnp.int32)
        if query_positions is None:
            query_positions = jnp.arange(query_length)[None]
        if key_positions is None:
            key_positions = jnp.arange(key_length)[None]
        relative = key_positions[:, None, :] - query_positions[:, :, None]
        index = jnp.clip(relative + (query_length - 1), 0, table.shape[0] - 1)
        buckets = jnp.take(table, index)
        bias = jnp.take(self.embedding.get_value().astype(jnp.float32), buckets, axis=0)
        return jnp.transpose(bias, (0, 3, 1, 2))


def rope_inverse_frequencies(head_dim: int, theta: float,
                             scaling: RopeScaling | None = None) -> np.ndarray:
    """Inverse frequencies of RoPE (float32), optionally with Llama 3 frequency scaling."""
    inv_freq = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32)
                                / head_dim))
    inv_freq = inv_freq.astype(np.float32)
    if scaling is None:
        return inv_freq
    old_len = scaling.original_max_position_embeddings
    low_freq_wavelen = old_len / scaling.low_freq_factor
    high_freq_wavelen = old_len / scaling.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > low_freq_wavelen, inv_freq / scaling.factor, inv_freq)
    smooth = ((old_len / wavelen - scaling.low_freq_factor)
              / (scaling.high_freq_factor - scaling.low_freq_factor))
    smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
    return np.where(is_medium, smoothed, scaled).astype(np.float32)


def rotary_tables(positions: jax.Array, inv_freq: np.ndarray) -> tuple[jax.Array, jax.Array]:
    """cos and sin tables [b, length, head_dim] (float32) for integer positions [b, length]."""
    freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)[None, None, :]
    angles = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotates head-major x [b, heads, length, head_dim] in the half-split layout
    (`rotate_half`), the layout of Hugging Face Llama/Mistral checkpoints."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    cos = cos[:, None, :, :].astype(x.dtype)
    sin = sin[:, None, :, :].astype(x.dtype)
    return x * cos + rotated * sin
