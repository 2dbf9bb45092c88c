"""Attention kernels: both against an explicit softmax, and blocked against xla (values and
gradients), for multi-head and grouped-query attention and every bias layout the models use."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

from flantune.models import DecoderConfig, T5Config, build_model, model_params
from flantune.models.attention import (
    MASK_VALUE,
    blocked_attention,
    dot_product_attention,
    resolve_kernel,
    xla_attention,
)
from tests.models.jit_forward import forward

KERNELS = {"xla": xla_attention, "blocked": blocked_attention}


def _reference(q, k, v, terms):
    """Loops over rows and heads in numpy (float64)."""
    b, heads, q_len, _ = q.shape
    groups = heads // k.shape[1]
    bias = sum(np.broadcast_to(t, (b, heads, q_len, k.shape[2])) for t in terms)
    out = np.zeros(q.shape)
    for row in range(b):
        for head in range(heads):
            logits = q[row, head] @ k[row, head // groups].T + bias[row, head]
            weights = np.exp(logits - logits.max(-1, keepdims=True))
            weights /= weights.sum(-1, keepdims=True)
            out[row, head] = weights @ v[row, head // groups]
    return out


def _inputs(seed, b, heads, kv_heads, q_len, k_len, bias_shapes, d=4):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(b, heads, q_len, d)).astype(np.float32)
    k = rng.normal(size=(b, kv_heads, k_len, d)).astype(np.float32)
    v = rng.normal(size=(b, kv_heads, k_len, d)).astype(np.float32)
    terms = [rng.normal(size=s).astype(np.float32) for s in bias_shapes]
    return q, k, v, terms


# (heads, kv_heads, q_len, k_len, bias term shapes): T5 encoder (position bias shared by the
# batch + padding mask), packed rows (per-row position bias), cross-attention (a [b,1,1,k]
# mask), decoder-only grouped-query attention with a causal mask.
CASES = [
    (2, 2, 5, 5, [(1, 2, 5, 5), (3, 1, 5, 5)]),
    (2, 2, 5, 5, [(3, 2, 5, 5)]),
    (2, 2, 4, 6, [(3, 1, 1, 6)]),
    (4, 2, 6, 6, [(1, 1, 6, 6)]),
    (6, 3, 3, 7, [(3, 6, 3, 7), (1, 1, 3, 7)]),
]


@pytest.mark.parametrize("name", sorted(KERNELS))
@pytest.mark.parametrize("case", CASES)
def test_kernels_match_an_explicit_softmax(name, case):
    heads, kv_heads, q_len, k_len, shapes = case
    q, k, v, terms = _inputs(0, 3, heads, kv_heads, q_len, k_len, shapes)
    got = KERNELS[name](*map(jnp.asarray, (q, k, v)), tuple(map(jnp.asarray, terms)))
    np.testing.assert_allclose(np.asarray(got), _reference(q, k, v, terms), rtol=2e-5,
                               atol=2e-6)


@pytest.mark.parametrize("case", CASES)
def test_blocked_gradients_equal_xla_gradients(case):
    heads, kv_heads, q_len, k_len, shapes = case
    q, k, v, terms = _inputs(1, 3, heads, kv_heads, q_len, k_len, shapes)
    cotangent = jnp.asarray(np.random.default_rng(2).normal(size=q.shape), jnp.float32)

    def grads(kernel):
        def loss(q, k, v, terms):
            return jnp.sum(kernel(q, k, v, terms) * cotangent)
        return jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(
            *map(jnp.asarray, (q, k, v)), tuple(map(jnp.asarray, terms)))

    for got, want in zip(jax.tree.leaves(grads(blocked_attention)),
                         jax.tree.leaves(grads(xla_attention)), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_a_fully_masked_row_gives_a_uniform_average_not_nan(name):
    q, k, v, (position,) = _inputs(3, 1, 2, 2, 3, 4, [(1, 2, 3, 4)])
    mask = np.zeros((1, 1, 3, 4), np.float32)
    mask[0, 0, 1, :] = MASK_VALUE  # query 1 may attend to nothing (a padding query)
    got = np.asarray(KERNELS[name](*map(jnp.asarray, (q, k, v)),
                                   (jnp.asarray(position), jnp.asarray(mask))))
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got[0, :, 1], v[0, :, :].mean(1), rtol=1e-3, atol=1e-4)


def test_blocked_dropout_is_deterministic_and_drops():
    q, k, v, terms = _inputs(4, 2, 2, 2, 8, 8, [(1, 1, 8, 8)])
    args = (*map(jnp.asarray, (q, k, v)), tuple(map(jnp.asarray, terms)))
    key = jax.random.key(0)
    first = blocked_attention(*args, dropout_rate=0.5, dropout_key=key)
    again = blocked_attention(*args, dropout_rate=0.5, dropout_key=key)
    other = blocked_attention(*args, dropout_rate=0.5, dropout_key=jax.random.key(1))
    plain = blocked_attention(*args)
    np.testing.assert_array_equal(np.asarray(first), np.asarray(again))
    assert not np.allclose(np.asarray(first), np.asarray(other))
    assert not np.allclose(np.asarray(first), np.asarray(plain))


def test_auto_picks_blocked_on_one_cpu_device_for_large_slices_only():
    assert jax.default_backend() == "cpu"
    assert resolve_kernel("auto", 512, 512) == "blocked"
    assert resolve_kernel("auto", 1, 512) == "xla"  # one decoding step
    assert resolve_kernel("auto", 128, 512) == "xla"  # T5 cross-attention: xla measured faster
    assert resolve_kernel("xla", 512, 512) == "xla"
    with pytest.raises(ValueError, match="unknown attention kernel 'flash'"):
        resolve_kernel("flash", 512, 512)


def test_scale_multiplies_the_logits():
    q, k, v, terms = _inputs(5, 1, 2, 2, 3, 3, [(1, 1, 3, 3)])
    args = tuple(map(jnp.asarray, (k, v)))
    scaled = dot_product_attention(jnp.asarray(q), *args, jnp.asarray(terms[0]), scale=0.5)
    want = _reference(0.5 * q, k, v, terms)
    np.testing.assert_allclose(np.asarray(scaled), want, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("config", [
    T5Config(vocab_size=64, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=24,
             num_encoder_layers=2, num_decoder_layers=2),
    DecoderConfig(vocab_size=64, emb_dim=16, num_heads=4, num_kv_heads=2, head_dim=8,
                  mlp_dim=24, num_layers=2),
], ids=["t5", "decoder"])
def test_models_give_the_same_logits_with_either_kernel(config):
    """The packed batches the trainer feeds: segment ids and positions restart per segment."""
    rng = np.random.default_rng(6)
    tokens = jnp.asarray(rng.integers(1, 64, (2, 12)), jnp.int32)
    segments = jnp.asarray(np.repeat([[1] * 7 + [2] * 4 + [0]], 2, axis=0), jnp.int32)
    positions = jnp.asarray(np.repeat([list(range(7)) + list(range(4)) + [0]], 2, axis=0),
                            jnp.int32)
    params = model_params(build_model(config, nnx.Rngs(0)))
    logits = {}
    for kernel in ("xla", "blocked"):
        model = build_model(dataclasses.replace(config, attention_kernel=kernel), params=params)
        if isinstance(config, T5Config):
            logits[kernel] = forward(model, tokens, tokens, encoder_segment_ids=segments,
                                     decoder_segment_ids=segments, encoder_positions=positions,
                                     decoder_positions=positions)
        else:
            logits[kernel] = forward(model, tokens, decoder_segment_ids=segments,
                                     decoder_positions=positions)
    np.testing.assert_allclose(logits["blocked"], logits["xla"], rtol=1e-5, atol=1e-5)


def test_an_unknown_kernel_in_a_model_config_is_rejected():
    with pytest.raises(ValueError, match="attention_kernel='flash'"):
        T5Config(attention_kernel="flash")


@pytest.mark.parametrize("dropout_rate", [0.0, 0.3])
def test_blocked_gradients_equal_finite_differences_with_and_without_dropout(dropout_rate):
    """The hand-written backward (dropout masks regenerated from the key) against numerical
    derivatives of the forward it belongs to, for queries, keys, values and a bias term."""
    q, k, v, terms = _inputs(7, 2, 4, 2, 5, 6, [(1, 4, 5, 6), (2, 1, 5, 6)])
    mask_term = jnp.asarray(terms[1])
    key = jax.random.key(3)

    def attend(q, k, v, position):
        return blocked_attention(q, k, v, (position, mask_term), dropout_rate=dropout_rate,
                                 dropout_key=key)

    check_grads(attend, tuple(map(jnp.asarray, (q, k, v, terms[0]))), order=1, modes=["rev"],
                eps=1e-2, atol=2e-2, rtol=2e-2)
