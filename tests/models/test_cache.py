"""Incremental decoding with the key/value cache equals the full forward pass."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flantune.models import DecoderConfig, T5Config, build_model
from flantune.models.cache import cache_slots, take_rows
from flantune.models.positions import RelativePositionBias
from tests.models.jit_forward import forward

TOL = 1e-5

T5_TINY = T5Config(vocab_size=50, emb_dim=32, num_heads=4, head_dim=8, mlp_dim=48,
                   num_encoder_layers=2, num_decoder_layers=3, relative_attention_num_buckets=8,
                   relative_attention_max_distance=12)
DECODER_TINY = DecoderConfig(vocab_size=50, emb_dim=32, num_heads=4, num_kv_heads=2, head_dim=8,
                             mlp_dim=48, num_layers=2)


@nnx.jit
def _init_t5(model, enc):
    return model.init_decode_cache(model.encode(enc), enc, 26)


@nnx.jit
def _step(model, tokens, cache, index):
    """One compiled decode step per input shape (the index is traced)."""
    return model.decode_step(tokens, cache, index)


def test_relative_position_bias_of_one_query_is_the_full_row():
    bias = RelativePositionBias(8, 12, 4, bidirectional=False, param_dtype=jnp.float32,
                                rngs=nnx.Rngs(0))
    full = np.asarray(bias(None, None, 20, 20))
    keys = jnp.arange(20)[None]
    for t in (0, 1, 7, 19):
        row = np.asarray(bias(jnp.asarray([[t]]), keys, 20, 20))
        np.testing.assert_array_equal(row[0, :, 0], full[0, :, t])


@pytest.mark.parametrize("scan", [False, True])
def test_t5_token_by_token_equals_decode(scan):
    model = build_model(dataclasses.replace(T5_TINY, scan_layers=scan), nnx.Rngs(0))
    rng = np.random.default_rng(0)
    enc = rng.integers(2, 50, (2, 9))
    enc[1, 5:] = 0
    dec = rng.integers(2, 50, (2, 24))
    dec[:, 0] = 0
    full = forward(model, jnp.asarray(enc), jnp.asarray(dec))

    enc = jnp.asarray(enc)
    cache = _init_t5(model, enc)
    logits, cache = _step(model, jnp.asarray(dec[:, :3]), cache, 0)  # several at once too
    steps = [logits]
    for t in range(3, dec.shape[1]):
        logits, cache = _step(model, jnp.asarray(dec[:, t:t + 1]), cache, t)
        steps.append(logits)
    got = np.concatenate([np.asarray(s) for s in steps], axis=1)
    assert np.abs(full).max() > 1.0
    np.testing.assert_allclose(got, full, atol=TOL, rtol=0)


@pytest.mark.parametrize("scan", [False, True])
@pytest.mark.parametrize("window", [None, 5])
def test_decoder_left_padded_prefill_then_steps_equals_forward(scan, window):
    """Row 1 has 3 left pads: its cache slots are shifted by 3, its RoPE positions are not."""
    config = dataclasses.replace(DECODER_TINY, scan_layers=scan, sliding_window=window)
    model = build_model(config, nnx.Rngs(0))
    tokens = np.random.default_rng(0).integers(2, 50, (2, 20))
    want_0 = forward(model, jnp.asarray(tokens[:1]))[0]
    want_1 = forward(model, jnp.asarray(tokens[1:, 3:]))[0]
    padded = tokens.copy()
    padded[1, :3] = 0

    cache = model.init_decode_cache(2, 24, jnp.array([0, 3]))
    logits, cache = _step(model, jnp.asarray(padded[:, :8]), cache, 0)
    steps = [logits]
    for t in range(8, 20):
        logits, cache = _step(model, jnp.asarray(padded[:, t:t + 1]), cache, t)
        steps.append(logits)
    got = np.concatenate([np.asarray(s) for s in steps], axis=1)
    np.testing.assert_allclose(got[0], want_0, atol=TOL, rtol=0)
    np.testing.assert_allclose(got[1, 3:], want_1, atol=TOL, rtol=0)


@pytest.mark.parametrize("scan", [False, True])
def test_take_rows_reorders_every_layer_and_row_entry(scan):
    model = build_model(dataclasses.replace(DECODER_TINY, scan_layers=scan), nnx.Rngs(0))
    cache = model.init_decode_cache(3, 7, jnp.array([0, 1, 2]))
    cache = jax.tree.map(lambda a: a + jnp.arange(3).reshape(
        (1,) * (scan) + (3,) + (1,) * (a.ndim - 1 - scan)) if a.ndim >= 4 else a, cache)
    picked = take_rows(cache, jnp.array([2, 2, 0]))
    assert cache_slots(picked) == 7
    np.testing.assert_array_equal(picked["first_slot"], [2, 2, 0])
    layers = picked["layers"] if scan else picked["layers"][1]
    key = np.asarray(layers["key"])
    rows = key[0] if scan else key
    np.testing.assert_array_equal(rows[:, 0, 0, 0], [2, 2, 0])
