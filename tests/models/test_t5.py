"""T5 v1.0 and v1.1 / Flan-T5 against Hugging Face transformers, packing, scan, dtypes."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flantune.models import T5Config, build_model, load_hf_checkpoint
from tests.models import hf_reference as ref
from tests.models.jit_forward import forward

TOL = 1e-5


def _batch(seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Padded encoder and decoder batches (decoder starts with BOS 0) and the decoder's valid
    positions."""
    rng = np.random.default_rng(seed)
    enc = rng.integers(2, ref.VOCAB, (3, 30))
    enc[1, 19:] = 0
    enc[2, 4:] = 0
    dec = rng.integers(2, ref.VOCAB, (3, 26))
    dec[:, 0] = 0
    dec[2, 9:] = 0
    valid = np.ones_like(dec, dtype=bool)
    valid[2, 9:] = False
    return enc, dec, valid


@pytest.fixture(scope="module", params=["v1_0", "v1_1"])
def hf_t5(request, tmp_path_factory):
    model = ref.t5(request.param, seed=3)
    directory = ref.save(model, tmp_path_factory.mktemp(f"t5_{request.param}"))
    return request.param, model, directory


def test_config_layout_matches_version(hf_t5):
    version, _, directory = hf_t5
    config, _ = load_hf_checkpoint(directory)
    if version == "v1_0":
        assert (config.gated_mlp, config.mlp_activation, config.tie_word_embeddings) == (
            False, "relu", True)
    else:
        assert (config.gated_mlp, config.mlp_activation, config.tie_word_embeddings) == (
            True, "gelu_tanh", False)


@pytest.mark.parametrize("with_segment_ids", [False, True])
def test_logits_match_transformers_on_padded_batch(hf_t5, with_segment_ids):
    _, hf_model, directory = hf_t5
    enc, dec, valid = _batch()
    expected = ref.t5_logits(hf_model, enc, dec)
    config, params = load_hf_checkpoint(directory)
    model = build_model(config, params=params)
    kwargs = {}
    if with_segment_ids:  # one segment per row: must equal plain padding masks
        kwargs = dict(encoder_segment_ids=jnp.asarray(enc > 0, jnp.int32),
                      decoder_segment_ids=jnp.asarray(valid, jnp.int32))
    logits = np.asarray(forward(model, jnp.asarray(enc), jnp.asarray(dec), **kwargs))
    assert logits.shape == expected.shape
    assert np.abs(expected).max() > 1.0  # the comparison is not between near-zero numbers
    np.testing.assert_allclose(logits[valid], expected[valid], atol=TOL, rtol=0)


def test_scanned_rematerialized_model_matches_transformers(hf_t5):
    _, hf_model, directory = hf_t5
    enc, dec, valid = _batch(seed=2)
    expected = ref.t5_logits(hf_model, enc, dec)
    config, params = load_hf_checkpoint(directory, scan_layers=True)
    config = dataclasses.replace(config, remat=True)
    assert params["encoder"]["layers"]["layers"]["mlp"]["wo"]["kernel"].shape[0] == 2
    model = build_model(config, params=params)
    logits = forward(model, jnp.asarray(enc), jnp.asarray(dec))
    np.testing.assert_allclose(logits[valid], expected[valid], atol=TOL, rtol=0)


def test_encode_then_decode_equals_call(hf_t5):
    _, _, directory = hf_t5
    enc, dec, _ = _batch()
    config, params = load_hf_checkpoint(directory)
    model = build_model(config, params=params)

    @nnx.jit
    def two_step(m, e, d):
        encoded = m.encode(e)
        return encoded, m.decode(encoded, e, d)

    encoded, logits = two_step(model, jnp.asarray(enc), jnp.asarray(dec))
    assert encoded.shape == (*enc.shape, config.emb_dim)
    np.testing.assert_array_equal(np.asarray(logits),
                                  forward(model, jnp.asarray(enc), jnp.asarray(dec)))


TINY = T5Config(vocab_size=ref.VOCAB, emb_dim=32, num_heads=4, head_dim=8, mlp_dim=48,
                num_encoder_layers=2, num_decoder_layers=2, relative_attention_num_buckets=8,
                relative_attention_max_distance=24)


def _pack(parts: list[np.ndarray], length: int) -> tuple[np.ndarray, ...]:
    tokens, segments, positions = (np.zeros(length, np.int32) for _ in range(3))
    start = 0
    for i, part in enumerate(parts):
        tokens[start:start + len(part)] = part
        segments[start:start + len(part)] = i + 1
        positions[start:start + len(part)] = np.arange(len(part))
        start += len(part)
    return tokens[None], segments[None], positions[None]


@pytest.mark.parametrize("scan", [False, True])
def test_packed_row_equals_each_example_alone(scan):
    """SeqIO packing: segment ids + per-segment positions make a packed row's logits equal to
    each example run by itself (relative positions restart, no attention across examples)."""
    config = dataclasses.replace(TINY, scan_layers=scan)
    model = build_model(config, nnx.Rngs(7))
    rng = np.random.default_rng(0)
    examples = []
    for enc_len, dec_len in ((7, 5), (9, 6), (3, 2)):
        dec = rng.integers(2, ref.VOCAB, dec_len)
        dec[0] = 0  # each decoder input starts a new segment with BOS
        examples.append((rng.integers(2, ref.VOCAB, enc_len), dec))
    enc_len, dec_len = 24, 16
    enc, enc_seg, enc_pos = _pack([e for e, _ in examples], enc_len)
    dec, dec_seg, dec_pos = _pack([d for _, d in examples], dec_len)
    packed = forward(model, jnp.asarray(enc), jnp.asarray(dec),
                     encoder_segment_ids=jnp.asarray(enc_seg),
                     decoder_segment_ids=jnp.asarray(dec_seg),
                     encoder_positions=jnp.asarray(enc_pos),
                     decoder_positions=jnp.asarray(dec_pos))
    alone_enc = np.zeros((len(examples), enc_len), np.int32)
    alone_dec = np.zeros((len(examples), dec_len), np.int32)
    for row, (enc_part, dec_part) in enumerate(examples):
        alone_enc[row, :len(enc_part)] = enc_part
        alone_dec[row, :len(dec_part)] = dec_part
    alone = forward(model, jnp.asarray(alone_enc), jnp.asarray(alone_dec))
    start = 0
    for row, (_, dec_part) in enumerate(examples):
        np.testing.assert_allclose(packed[0, start:start + len(dec_part)],
                                   alone[row, :len(dec_part)], atol=TOL, rtol=0)
        start += len(dec_part)


def test_bfloat16_compute_keeps_float32_params_and_tracks_float32():
    f32_model = build_model(TINY, nnx.Rngs(1))
    bf16_config = dataclasses.replace(TINY, dtype="bfloat16")
    bf16_model = build_model(bf16_config, nnx.Rngs(1))
    params = jax.tree.leaves(nnx.state(bf16_model, nnx.Param))
    assert all(p.dtype == jnp.float32 for p in params)
    enc, dec, _ = _batch()
    exact = forward(f32_model, jnp.asarray(enc), jnp.asarray(dec))
    approx = forward(bf16_model, jnp.asarray(enc), jnp.asarray(dec))
    assert approx.dtype == np.float32
    scale = np.abs(exact).max()
    assert np.abs(approx - exact).max() < 0.1 * scale
    assert np.abs(approx - exact).max() > 0  # bf16 really was used


def test_dropout_needs_a_key_and_is_reproducible():
    model = build_model(dataclasses.replace(TINY, dropout_rate=0.3), nnx.Rngs(0))
    enc, dec, _ = _batch()
    enc, dec = jnp.asarray(enc), jnp.asarray(dec)
    with pytest.raises(ValueError, match="dropout_rng"):
        model(enc, dec, deterministic=False)
    a = forward(model, enc, dec, deterministic=False, dropout_rng=jax.random.key(0))
    b = forward(model, enc, dec, deterministic=False, dropout_rng=jax.random.key(0))
    c = forward(model, enc, dec, deterministic=True)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
