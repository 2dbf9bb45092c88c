"""Layout of the decoding cache shared by both model families.

A cache is a dict: `"layers"` holds each attention layer's head-major keys and values
[b, kv_heads, slots, kv] (plus any per-layer extras), as a tuple with one dict per layer or, for
scanned layer stacks, one dict of arrays stacked on a leading `layers` axis; every other entry is
per-row data with the batch on axis 0. These helpers hide that difference from search code.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

Cache = dict[str, Any]


def _stacked(cache: Cache) -> bool:
    return not isinstance(cache["layers"], tuple)


def first_layer(layers: Any) -> dict[str, jax.Array]:
    """The first layer's entries (or, stacked, every layer's: shapes differ, names agree)."""
    return layers[0] if isinstance(layers, tuple) else layers


def cache_slots(cache: Cache) -> int:
    """How many positions the self-attention keys/values hold."""
    return first_layer(cache["layers"])["key"].shape[-2]


def take_rows(cache: Cache, rows: jax.Array) -> Cache:
    """The cache of batch rows `rows` (int [n]): reorders beams, or repeats rows."""
    layer_axis = 1 if _stacked(cache) else 0
    out = {name: jax.tree.map(lambda a: jnp.take(a, rows, axis=0), value)
           for name, value in cache.items() if name != "layers"}
    out["layers"] = jax.tree.map(lambda a: jnp.take(a, rows, axis=layer_axis), cache["layers"])
    return out
