"""Llama / Mistral decoder-only models against Hugging Face transformers; PrefixLM and packing."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flantune.models import DecoderConfig, build_model, load_hf_checkpoint, model_params
from tests.models import hf_reference as ref
from tests.models.jit_forward import forward

TOL = 1e-5

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 16,
               "rope_theta": 500.0}

VARIANTS = {
    "llama": dict(family="llama", rope_theta=1000.0),
    "llama_tied": dict(family="llama", tie_word_embeddings=True),
    "llama3_rope": dict(family="llama", rope_parameters=LLAMA3_ROPE, max_position_embeddings=64),
    "mistral_sliding_window": dict(family="mistral", sliding_window=6),
}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def hf_decoder(request, tmp_path_factory):
    kwargs = dict(VARIANTS[request.param])
    model = ref.decoder(kwargs.pop("family"), seed=5, **kwargs)
    directory = ref.save(model, tmp_path_factory.mktemp(request.param))
    return request.param, model, directory


def _batch() -> tuple[np.ndarray, np.ndarray]:
    """Right-padded tokens [3, 20] longer than the sliding window, and the attention mask."""
    rng = np.random.default_rng(1)
    tokens = rng.integers(2, ref.VOCAB, (3, 20))
    mask = np.ones_like(tokens)
    mask[1, 13:] = 0
    mask[2, 3:] = 0
    tokens[mask == 0] = 0
    return tokens, mask


def test_config_from_checkpoint(hf_decoder):
    name, _, directory = hf_decoder
    config, _ = load_hf_checkpoint(directory)
    assert (config.num_heads, config.num_kv_heads, config.head_dim) == (4, 2, 8)
    assert config.family == ("mistral" if name.startswith("mistral") else "llama")
    assert config.sliding_window == (6 if name.startswith("mistral") else None)
    assert config.tie_word_embeddings == (name == "llama_tied")
    assert (config.rope_scaling is not None) == (name == "llama3_rope")


@pytest.mark.parametrize("scan", [False, True])
def test_logits_match_transformers_on_padded_batch(hf_decoder, scan):
    _, hf_model, directory = hf_decoder
    tokens, mask = _batch()
    expected = ref.decoder_logits(hf_model, tokens, mask)
    config, params = load_hf_checkpoint(directory, scan_layers=scan)
    model = build_model(dataclasses.replace(config, remat=scan), params=params)
    logits = forward(model, jnp.asarray(tokens), decoder_segment_ids=jnp.asarray(mask))
    valid = mask.astype(bool)
    assert np.abs(expected).max() > 1.0
    np.testing.assert_allclose(logits[valid], expected[valid], atol=TOL, rtol=0)


TINY = DecoderConfig(vocab_size=ref.VOCAB, emb_dim=32, num_heads=4, num_kv_heads=2, head_dim=8,
                     mlp_dim=48, num_layers=2)


def test_prefix_lm_attends_bidirectionally_within_the_prefix_only():
    """With decoder_causal_attention = 1 on the inputs, an early input position sees later
    inputs but never targets; target positions stay causal."""
    model = build_model(TINY, nnx.Rngs(0))
    rng = np.random.default_rng(0)
    tokens = rng.integers(2, ref.VOCAB, (1, 10))
    prefix = np.zeros_like(tokens)
    prefix[0, :4] = 1

    def run(t: np.ndarray) -> np.ndarray:
        return forward(model, jnp.asarray(t), decoder_causal_attention=jnp.asarray(prefix))

    base = run(tokens)
    changed_input = tokens.copy()
    changed_input[0, 3] = 2 if tokens[0, 3] != 2 else 3
    out = run(changed_input)
    assert not np.allclose(out[0, 0], base[0, 0])  # position 0 sees input position 3
    changed_target = tokens.copy()
    changed_target[0, 7] = 2 if tokens[0, 7] != 2 else 3
    out = run(changed_target)
    np.testing.assert_array_equal(out[0, :7], base[0, :7])  # nothing before 7 sees it
    assert not np.allclose(out[0, 7], base[0, 7])
    causal = forward(model, jnp.asarray(tokens))
    assert not np.allclose(causal[0, 0], base[0, 0])  # plain causal: position 0 sees only itself


@pytest.mark.parametrize("prefix_lm", [False, True])
def test_packed_row_equals_each_example_alone(prefix_lm):
    model = build_model(dataclasses.replace(TINY, sliding_window=5), nnx.Rngs(1))
    rng = np.random.default_rng(2)
    lengths, length = (7, 9, 3), 24
    packed = {name: np.zeros((1, length), np.int32) for name in ("tok", "seg", "pos", "pre")}
    alone = {name: np.zeros((len(lengths), length), np.int32) for name in ("tok", "pre")}
    start = 0
    for row, n in enumerate(lengths):
        part = rng.integers(2, ref.VOCAB, n)
        pre = (np.arange(n) < n // 2).astype(np.int32)
        packed["tok"][0, start:start + n] = part
        packed["seg"][0, start:start + n] = row + 1
        packed["pos"][0, start:start + n] = np.arange(n)
        packed["pre"][0, start:start + n] = pre
        alone["tok"][row, :n] = part
        alone["pre"][row, :n] = pre
        start += n
    extra = {}
    alone_extra = {}
    if prefix_lm:
        extra["decoder_causal_attention"] = jnp.asarray(packed["pre"])
        alone_extra["decoder_causal_attention"] = jnp.asarray(alone["pre"])
    got = forward(model, jnp.asarray(packed["tok"]), decoder_segment_ids=jnp.asarray(packed["seg"]),
                  decoder_positions=jnp.asarray(packed["pos"]), **extra)
    want = forward(model, jnp.asarray(alone["tok"]), **alone_extra)
    start = 0
    for row, n in enumerate(lengths):
        np.testing.assert_allclose(got[0, start:start + n], want[row, :n], atol=TOL, rtol=0)
        start += n


def test_grouped_query_attention_equals_repeated_key_value_heads():
    """GQA with 2 kv heads equals full multi-head attention whose kv heads are repeated
    (query heads 0, 1 share kv head 0; heads 2, 3 share kv head 1)."""
    gqa = build_model(TINY, nnx.Rngs(3))
    params = jax.tree.map(lambda x: x, model_params(gqa))
    for layer in params["layers"]["layers"].values():
        for name in ("key", "value"):
            layer["attention"][name] = jnp.repeat(layer["attention"][name], 2, axis=1)
    mha = build_model(dataclasses.replace(TINY, num_kv_heads=4), params=params)
    tokens = jnp.asarray(np.random.default_rng(0).integers(2, ref.VOCAB, (2, 12)))
    np.testing.assert_allclose(forward(gqa, tokens), forward(mha, tokens), atol=TOL, rtol=0)
