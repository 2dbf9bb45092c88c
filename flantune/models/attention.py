"""The attention core: softmax(q k^T + bias) v, head-major, in two interchangeable kernels.

`xla` materializes the scores of every batch row and head at once as batched GEMMs; it is what
GPUs and TPUs want. `blocked` (written by hand because no library kernel does this on XLA:CPU)
maps over (batch row, key/value head) slices with `lax.map`: each slice's scores, a
[query, key] matrix of ~1 MB at 512 tokens, stay in the CPU's L2 cache, its GEMMs are plain 2-D
ones, and the backward pass recomputes the scores from each query's saved row maximum and sum
instead of reading them back from memory. On a 2-core CPU it runs the forward and backward of a
T5-small encoder self-attention (8 x 512 tokens, 6 heads) 1.5-2.4x faster than `xla` (numbers
in BENCHMARKS.md). It only helps CPUs, so `auto` picks it on a single CPU device; a loop over
a batch sharded across devices would make XLA gather it. Both kernels agree to float rounding.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from flantune.models.dropout import dropout

# Large finite negative number added to masked attention logits. Finite (not -inf) so a row with
# every key masked (a padding query) yields a uniform softmax instead of NaN.
MASK_VALUE = float(jnp.finfo(jnp.float32).min)

ATTENTION_KERNELS = ("auto", "xla", "blocked")

# Below this many score entries per slice, per-slice loop overhead outweighs cache locality:
# measured at T5-small's shapes on 2 cores (tools/bench_attention.py), `xla` runs 128 x 512
# cross-attention 10-20% faster, `blocked` 512 x 512 self-attention 1.5x faster; at 128 x 128
# `blocked` is ~10% faster but that op is small (~1 ms of a 6 s step per layer).
_MIN_BLOCKED_SCORES = 256 * 512

Bias = jax.Array | Sequence[jax.Array]


def _bias_terms(bias: Bias) -> tuple[jax.Array, ...]:
    terms = (bias,) if isinstance(bias, jax.Array) else tuple(bias)
    return tuple(term.astype(jnp.float32) for term in terms)


def xla_attention(query: jax.Array, key: jax.Array, value: jax.Array, bias: Bias, *,
                  dropout_rate: float = 0.0, dropout_key: jax.Array | None = None) -> jax.Array:
    """Batched-GEMM attention. query [b, heads, q, d]; key, value [b, kv_heads, k, d]; each bias
    term broadcastable to [b, heads, q, k]. Heads are grouped as [kv_heads, heads // kv_heads]
    so keys and values are never repeated in memory. Returns [b, heads, q, d]."""
    b, num_heads, q_len, head_dim = query.shape
    num_kv_heads = key.shape[1]
    groups = num_heads // num_kv_heads
    query = query.reshape(b, num_kv_heads, groups, q_len, head_dim)
    logits = jnp.einsum("bkgqd,bksd->bkgqs", query, key).astype(jnp.float32)
    for term in _bias_terms(bias):
        # Per-head [B, heads, q, k] -> [B, kv_heads, groups, q, k]; a head-shared one broadcasts.
        term_heads = (1, 1) if term.shape[1] == 1 else (num_kv_heads, groups)
        logits = logits + term.reshape(term.shape[0], *term_heads, *term.shape[-2:])
    weights = jax.nn.softmax(logits, axis=-1).astype(value.dtype)
    weights = dropout(weights, dropout_rate, dropout_key)
    out = jnp.einsum("bkgqs,bksd->bkgqd", weights, value)
    return out.reshape(b, num_heads, q_len, head_dim)


def _slice_bias(term: jax.Array, row: jax.Array, kv_head: jax.Array, groups: int,
                q_len: int, k_len: int) -> jax.Array:
    """The [groups * q, k] bias of one (batch row, kv head) slice of a term broadcastable to
    [b, heads, q, k]."""
    part = jax.lax.dynamic_index_in_dim(term, row if term.shape[0] > 1 else 0, 0,
                                        keepdims=False)
    if part.shape[0] > 1:
        part = jax.lax.dynamic_slice_in_dim(part, kv_head * groups, groups, axis=0)
    return jnp.broadcast_to(part, (groups, q_len, k_len)).reshape(groups * q_len, k_len)


class _Slices(NamedTuple):
    """How the stacked slices map back to [b, heads, q, k] (static; hashable)."""

    kv_heads: int
    groups: int
    q_len: int
    dropout_rate: float

    def position(self, index: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The (batch row, kv head) of slice `index`."""
        return index // self.kv_heads, index % self.kv_heads


def blocked_attention(query: jax.Array, key: jax.Array, value: jax.Array, bias: Bias, *,
                      dropout_rate: float = 0.0,
                      dropout_key: jax.Array | None = None) -> jax.Array:
    """`xla_attention` computed one (batch row, kv head) slice at a time; same arguments.

    The query heads sharing a kv head are stacked into one [groups * q, d] matrix, so each slice
    is two 2-D GEMMs against its keys and values.
    """
    b, num_heads, q_len, head_dim = query.shape
    num_kv_heads = key.shape[1]
    groups = num_heads // num_kv_heads
    rate = dropout_rate if dropout_key is not None else 0.0
    slices = _Slices(num_kv_heads, groups, q_len, rate)
    out = _blocked(slices, query.reshape(b * num_kv_heads, groups * q_len, head_dim),
                   key.reshape(b * num_kv_heads, *key.shape[2:]),
                   value.reshape(b * num_kv_heads, *value.shape[2:]), _bias_terms(bias),
                   dropout_key if rate else None)
    return out.reshape(b, num_heads, q_len, head_dim)


def _slice_logits(slices: _Slices, terms: tuple[jax.Array, ...], row: jax.Array,
                  kv_head: jax.Array, q: jax.Array, k: jax.Array) -> jax.Array:
    logits = jnp.dot(q, k.T).astype(jnp.float32)
    for term in terms:
        logits = logits + _slice_bias(term, row, kv_head, slices.groups, slices.q_len,
                                      k.shape[0])
    return logits


def _dropout_scale(slices: _Slices, dropout_key: jax.Array | None, index: jax.Array,
                   shape: tuple[int, ...]) -> jax.Array | None:
    """keep / (1 - rate) for slice `index` (the same mask in the forward and the backward)."""
    if dropout_key is None:
        return None
    keep = jax.random.bernoulli(jax.random.fold_in(dropout_key, index),
                                1.0 - slices.dropout_rate, shape)
    return keep.astype(jnp.float32) / (1.0 - slices.dropout_rate)


# The slice loop has a hand-written backward (a custom VJP, as flash attention kernels do): the
# forward keeps each query's row maximum and 1 / row sum, so the backward rebuilds the softmax
# with one exp pass and takes the softmax gradient's row term from dO . O ([q, d]) instead of
# dP . P ([q, k]). Autodiff of a rematerialized slice recomputes the whole softmax and reduces
# over [q, k] again: 5-7% faster for T5-small self- and cross-attention on 2 cores.
@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _blocked(slices: _Slices, queries: jax.Array, keys: jax.Array, values: jax.Array,
             terms: tuple[jax.Array, ...], dropout_key: jax.Array | None) -> jax.Array:
    return _blocked_forward(slices, queries, keys, values, terms, dropout_key)[0]


def _blocked_forward(slices: _Slices, queries: jax.Array, keys: jax.Array, values: jax.Array,
                     terms: tuple[jax.Array, ...], dropout_key: jax.Array | None
                     ) -> tuple[jax.Array, tuple]:
    """The slice outputs and the residuals the backward needs."""
    def one_slice(args: tuple[jax.Array, ...]) -> tuple[jax.Array, tuple[jax.Array, ...]]:
        index, q, k, v = args
        logits = _slice_logits(slices, terms, *slices.position(index), q, k)
        row_max = jnp.max(logits, axis=-1, keepdims=True)
        weights = jnp.exp(logits - row_max)
        inverse_sum = 1.0 / jnp.sum(weights, axis=-1, keepdims=True)
        scale = _dropout_scale(slices, dropout_key, index, weights.shape)
        if scale is not None:
            weights = weights * scale
        out = (jnp.dot(weights.astype(v.dtype), v) * inverse_sum).astype(v.dtype)
        return out, (row_max, inverse_sum)

    out, stats = jax.lax.map(one_slice, (jnp.arange(queries.shape[0]), queries, keys, values))
    return out, (queries, keys, values, terms, dropout_key, out, stats)


def _blocked_backward(slices: _Slices, residuals: tuple, d_out: jax.Array) -> tuple:
    """Gradients for queries, keys, values and each bias term (none for the dropout key)."""
    queries, keys, values, terms, dropout_key, out, (row_max, inverse_sum) = residuals

    def one_slice(d_terms, args):
        index, q, k, v, o, do, m, inv = args
        row, kv_head = slices.position(index)
        probs = jnp.exp(_slice_logits(slices, terms, row, kv_head, q, k) - m) * inv
        d_probs = jnp.dot(do, v.T).astype(jnp.float32)
        used = probs
        scale = _dropout_scale(slices, dropout_key, index, probs.shape)
        if scale is not None:
            used, d_probs = probs * scale, d_probs * scale
        row_term = jnp.sum(do.astype(jnp.float32) * o.astype(jnp.float32), axis=-1,
                           keepdims=True)
        d_logits = probs * (d_probs - row_term)
        d_q = jnp.dot(d_logits.astype(q.dtype), k)
        d_k = jnp.dot(d_logits.T.astype(q.dtype), q)
        d_v = jnp.dot(used.T.astype(v.dtype), do)
        d_terms = tuple(_add_slice(d_term, d_logits, row, kv_head, slices)
                        for d_term in d_terms)
        return d_terms, (d_q, d_k, d_v)

    zeros = tuple(jnp.zeros(term.shape, jnp.float32) for term in terms)
    d_terms, (d_queries, d_keys, d_values) = jax.lax.scan(
        one_slice, zeros, (jnp.arange(queries.shape[0]), queries, keys, values, out, d_out,
                           row_max, inverse_sum))
    return d_queries, d_keys, d_values, d_terms, None


def _add_slice(d_term: jax.Array, d_logits: jax.Array, row: jax.Array, kv_head: jax.Array,
               slices: _Slices) -> jax.Array:
    """Adds one slice's [groups * q, k] logit gradient into a bias term's gradient, summed
    over the axes the term broadcasts along (the inverse of `_slice_bias`)."""
    part = d_logits.reshape(slices.groups, slices.q_len, -1)
    part = jnp.sum(part, axis=tuple(axis for axis in (0, 1, 2) if d_term.shape[axis + 1] == 1),
                   keepdims=True)
    start = (row if d_term.shape[0] > 1 else 0,
             kv_head * slices.groups if d_term.shape[1] > 1 else 0, 0, 0)
    current = jax.lax.dynamic_slice(d_term, start, (1, *part.shape))
    return jax.lax.dynamic_update_slice(d_term, current + part[None], start)


_blocked.defvjp(_blocked_forward, _blocked_backward)


def _single_device() -> bool:
    """One device runs the computation: the current mesh has one, or without a mesh the
    process sees one (a sharded batch must not be looped over; XLA would regather it)."""
    mesh = jax.sharding.get_abstract_mesh()
    return mesh.size == 1 if not mesh.empty else jax.device_count() == 1


def resolve_kernel(kernel: str, q_len: int, k_len: int) -> str:
    """The kernel `auto` stands for: `blocked` on a single CPU device for slices of at least
    256 x 512 scores, else `xla`. A named kernel is returned as is (validated)."""
    if kernel not in ATTENTION_KERNELS:
        raise ValueError(f"unknown attention kernel {kernel!r}; choose one of "
                         f"{list(ATTENTION_KERNELS)}.")
    if kernel != "auto":
        return kernel
    if (jax.default_backend() == "cpu" and _single_device()
            and q_len * k_len >= _MIN_BLOCKED_SCORES):
        return "blocked"
    return "xla"


def dot_product_attention(query: jax.Array, key: jax.Array, value: jax.Array, bias: Bias, *,
                          scale: float = 1.0, dropout_rate: float = 0.0,
                          dropout_key: jax.Array | None = None,
                          kernel: str = "auto") -> jax.Array:
    """Grouped-query attention, head-major.

    query [b, heads, q, d]; key, value [b, kv_heads, k, d]; `bias` one array or several terms
    (e.g. a relative position bias [1, heads, q, k] and a mask bias [b, 1, q, k] holding
    MASK_VALUE on masked pairs), each broadcastable to [b, heads, q, k] and summed in float32.
    Keep masked pairs at MASK_VALUE in one term only. Returns [b, heads, q, d].
    """
    if scale != 1.0:
        query = query * jnp.asarray(scale, query.dtype)
    chosen = resolve_kernel(kernel, query.shape[2], key.shape[2])
    attend = blocked_attention if chosen == "blocked" else xla_attention
    return attend(query, key, value, bias, dropout_rate=dropout_rate, dropout_key=dropout_key)
