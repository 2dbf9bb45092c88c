"""Greedy decoding against Hugging Face `generate`, against full recomputation without a cache,
EOS handling and input checks."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flantune.decoding import (
    DecodeBatchError,
    DecodeConfig,
    DecodingError,
    generate,
    left_pad_prompts,
    make_generate_fn,
)
from flantune.models import build_model, load_hf_checkpoint, model_params
from tests.decoding.tiny import DECODER_TINY, PROMPTS, T5_TINY, encoder_batch
from tests.models import hf_reference as ref
from tests.models.jit_forward import forward

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

NEW_TOKENS = 12


def _pad_right(rows: list[np.ndarray], length: int, pad_id: int = 0) -> np.ndarray:
    out = np.full((len(rows), length), pad_id, np.int64)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out


def _hf_generate(model, input_ids: np.ndarray, attention_mask: np.ndarray, eos_id: int,
                 **kwargs) -> np.ndarray:
    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor(input_ids),
                             attention_mask=torch.tensor(attention_mask),
                             max_new_tokens=NEW_TOKENS, min_new_tokens=0, do_sample=False,
                             num_beams=1, eos_token_id=eos_id, pad_token_id=0,
                             repetition_penalty=1.0, **kwargs)
    return out.numpy()


@pytest.fixture(scope="module")
def hf_t5(tmp_path_factory):
    model = ref.t5("v1_1", seed=11)
    return model, ref.save(model, tmp_path_factory.mktemp("t5_decode"))


@pytest.fixture(scope="module", params=["llama", "mistral_window"])
def hf_decoder(request, tmp_path_factory):
    kwargs = {"sliding_window": 4} if request.param == "mistral_window" else {}
    family = "mistral" if request.param == "mistral_window" else "llama"
    model = ref.decoder(family, seed=12, **kwargs)
    return model, ref.save(model, tmp_path_factory.mktemp(request.param))


def _t5_greedy_reference(hf_model, enc: np.ndarray, eos_id: int) -> np.ndarray:
    # An explicit growing cache: transformers sizes its default one by the encoder's layer count
    # (2), fewer than this decoder's 3.
    cache = transformers.EncoderDecoderCache(transformers.DynamicCache(),
                                             transformers.DynamicCache())
    out = _hf_generate(hf_model, enc, (enc > 0).astype(np.int64), eos_id,
                       decoder_start_token_id=0, past_key_values=cache)
    return _pad_right(list(out[:, 1:]), NEW_TOKENS)  # drop the decoder start token


@pytest.mark.parametrize("scan", [False, True])
def test_t5_greedy_equals_transformers(hf_t5, scan):
    hf_model, directory = hf_t5
    enc = encoder_batch()
    config, params = load_hf_checkpoint(directory, scan_layers=scan)
    model = build_model(config, params=params)
    got = generate(model, {"encoder_input_tokens": enc},
                   DecodeConfig(max_decode_length=NEW_TOKENS, eos_id=1))
    want = _t5_greedy_reference(hf_model, enc, eos_id=1)
    np.testing.assert_array_equal(got.tokens, want)
    assert len({tuple(row) for row in got.tokens}) == 3  # rows really differ


def test_t5_eos_stops_a_row_and_pads_after_it(hf_t5):
    """EOS chosen as a token greedy decoding emits mid-way in one row: that row stops there
    (EOS kept, padding after) exactly as in transformers; the other rows go on."""
    hf_model, directory = hf_t5
    enc = encoder_batch()
    config, params = load_hf_checkpoint(directory)
    model = build_model(config, params=params)
    free = generate(model, {"encoder_input_tokens": enc},
                    DecodeConfig(max_decode_length=NEW_TOKENS, eos_id=1))
    eos = int(free.tokens[0, 4])
    stop = int(np.argmax(free.tokens[0] == eos))
    got = generate(model, {"encoder_input_tokens": enc},
                   DecodeConfig(max_decode_length=NEW_TOKENS, eos_id=eos))
    np.testing.assert_array_equal(got.tokens[0, :stop + 1], free.tokens[0, :stop + 1])
    assert (got.tokens[0, stop + 1:] == 0).all() and got.tokens[0, stop] == eos
    np.testing.assert_array_equal(got.tokens, _t5_greedy_reference(hf_model, enc, eos_id=eos))
    unstopped = [r for r in range(3) if eos not in free.tokens[r]]
    for row in unstopped:
        np.testing.assert_array_equal(got.tokens[row], free.tokens[row])
    # Scores sum the log-probabilities of the kept tokens only.
    assert got.scores[0] > free.scores[0]


@pytest.mark.parametrize("scan", [False, True])
def test_decoder_greedy_equals_transformers_per_prompt(hf_decoder, scan):
    """A left-padded batch decodes each prompt exactly as transformers does the prompt alone
    (no padding); the Mistral variant's window (4) is shorter than prompt + new tokens."""
    hf_model, directory = hf_decoder
    config, params = load_hf_checkpoint(directory, scan_layers=scan)
    model = build_model(config, params=params)
    got = generate(model, left_pad_prompts(PROMPTS),
                   DecodeConfig(max_decode_length=NEW_TOKENS, eos_id=2))
    for row, prompt in enumerate(PROMPTS):
        ids = np.asarray([prompt])
        out = _hf_generate(hf_model, ids, np.ones_like(ids), eos_id=2)
        want = _pad_right([out[0, len(prompt):]], NEW_TOKENS)[0]
        np.testing.assert_array_equal(got.tokens[row], want, err_msg=f"prompt {row}")


def _greedy_without_cache(model, batch: dict, config: DecodeConfig) -> tuple[np.ndarray, ...]:
    """Greedy decoding by running the full forward pass over the whole sequence at every step
    (a fixed-size buffer, so one compilation; causal attention ignores the unfilled tail)."""
    length = config.max_decode_length
    rows = len(next(iter(batch.values())))
    tokens = np.zeros((rows, length), np.int32)
    scores = np.zeros(rows)
    done = np.zeros(rows, bool)
    for i in range(length):
        if "encoder_input_tokens" in batch:
            sequence = np.concatenate([np.zeros((rows, 1), np.int32), tokens], axis=1)
            logits = forward(model, jnp.asarray(batch["encoder_input_tokens"]),
                             jnp.asarray(sequence))[:, i]
        else:
            prompt = batch["decoder_input_tokens"]
            sequence = np.concatenate([prompt, tokens], axis=1)
            pads = (prompt == 0).sum(axis=1)
            columns = np.arange(sequence.shape[1])[None]
            positions = np.maximum(columns - pads[:, None], 0)
            segments = (columns >= pads[:, None]).astype(np.int32)
            logits = forward(model, jnp.asarray(sequence),
                             decoder_positions=jnp.asarray(positions),
                             decoder_segment_ids=jnp.asarray(segments))[:, prompt.shape[1] - 1 + i]
        logits = logits.astype(np.float64)
        log_probs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(
            -1, keepdims=True)) - logits.max(-1, keepdims=True)
        token = np.where(done, config.pad_id, logits.argmax(-1))
        scores += np.where(done, 0.0, log_probs[np.arange(rows), token])
        tokens[:, i] = token
        done |= token == config.eos_id
    return tokens, scores


@pytest.mark.parametrize("family", ["t5", "decoder"])
@pytest.mark.parametrize("scan", [False, True])
def test_cached_greedy_equals_full_recomputation(family, scan):
    """A relative-position range (6) and sliding window (5) shorter than the output make the
    cache's positions matter."""
    spec = T5_TINY if family == "t5" else DECODER_TINY
    model = build_model(dataclasses.replace(spec, scan_layers=scan), nnx.Rngs(8))
    if family == "t5":
        batch = {"encoder_input_tokens": encoder_batch()}
    else:
        batch = left_pad_prompts(PROMPTS)
    config = DecodeConfig(max_decode_length=10, eos_id=int(ref.VOCAB - 1))
    got = generate(model, batch, config)
    tokens, scores = _greedy_without_cache(model, batch, config)
    np.testing.assert_array_equal(got.tokens, tokens)
    np.testing.assert_allclose(got.scores, scores, rtol=1e-5, atol=1e-4)


def test_generate_fn_reuses_one_compilation_and_takes_new_params():
    model = build_model(T5_TINY, nnx.Rngs(1))
    config = DecodeConfig(max_decode_length=6)
    fn = make_generate_fn(model, config)
    batch = {"encoder_input_tokens": encoder_batch()}
    first = fn(batch)
    np.testing.assert_array_equal(first.tokens, generate(model, batch, config).tokens)
    other = build_model(T5_TINY, nnx.Rngs(2))
    swapped = fn(batch, params=model_params(other))
    np.testing.assert_array_equal(swapped.tokens, generate(other, batch, config).tokens)
    from_spec = make_generate_fn(T5_TINY, config)
    with pytest.raises(DecodingError, match="params="):
        from_spec(batch)
    np.testing.assert_array_equal(from_spec(batch, params=model_params(other)).tokens,
                                  swapped.tokens)


def test_bad_batches_are_named():
    t5 = build_model(T5_TINY, nnx.Rngs(0))
    decoder = build_model(DECODER_TINY, nnx.Rngs(0))
    config = DecodeConfig(max_decode_length=3)
    with pytest.raises(DecodeBatchError, match="encoder_input_tokens"):
        generate(t5, {"inputs": encoder_batch()}, config)
    right_padded = {"decoder_input_tokens": np.array([[5, 6, 0], [7, 8, 9]], np.int32)}
    with pytest.raises(DecodeBatchError, match="row 0 .*left-padded"):
        generate(decoder, right_padded, config)
    with pytest.raises(DecodeBatchError, match="row 1 is all padding"):
        generate(decoder, {"decoder_input_tokens": np.array([[5, 6], [0, 0]])}, config)
    with pytest.raises(DecodingError, match="rng"):
        generate(t5, {"encoder_input_tokens": encoder_batch()},
                 DecodeConfig(max_decode_length=3, method="sample"))
