"""Predictions equal greedy decoding by repeated full forward passes over the sequences the
feature converters build (for decoder-only models: BOS 0 first, the prompt attended
bidirectionally as PrefixLM training sees it)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flantune.decoding import DecodeConfig
from flantune.evaluation.predict import Predictor, decode_config_for
from flantune.train.state import ModelSpec
from tests.evaluation.test_scoring import DECODER, T5

PROMPTS = [np.array([5, 9, 12, 1]), np.array([3, 1]), np.array([40, 41, 42, 43, 44, 1])]
NEW = 5


def _greedy_reference(spec: ModelSpec, params, prompt: np.ndarray) -> tuple[list[int], float]:
    """Greedy tokens (before EOS) and their summed log-probability (EOS included)."""
    model = spec.merge(params)
    out: list[int] = []
    total = 0.0
    for _ in range(NEW):
        if spec.family == "enc_dec":
            decoder_inputs = np.asarray([0, *out], np.int32)
            logits = model(encoder_input_tokens=jnp.asarray(prompt[None]),
                           decoder_input_tokens=jnp.asarray(decoder_inputs[None]),
                           deterministic=True)[0, -1]
        else:  # [BOS 0, prompt, generated], the prompt bidirectional (PrefixLM features)
            sequence = np.asarray([0, *prompt, *out], np.int32)
            prefix = (np.arange(sequence.size) <= prompt.size).astype(np.int32)
            logits = model(jnp.asarray(sequence[None]),
                           decoder_causal_attention=jnp.asarray(prefix[None]),
                           deterministic=True)[0, -1]
        logits = np.asarray(logits, np.float64)
        token = int(np.argmax(logits))
        total += float(logits[token] - np.log(np.exp(logits - logits.max()).sum()) - logits.max())
        out.append(token)
        if token == 1:
            break
    return (out[:-1] if out and out[-1] == 1 else out), total


@pytest.mark.parametrize("config", [T5, dataclasses.replace(DECODER, num_layers=2)],
                         ids=["t5", "decoder"])
def test_greedy_predictions_match_full_forward_greedy(config):
    spec = ModelSpec.from_config(config)
    params = spec.init_params(jax.random.key(5))
    predictor = Predictor(spec, DecodeConfig(), {"inputs": 8, "targets": NEW}, batch_size=2)
    got = predictor(params, PROMPTS)
    for prompt, prediction in zip(PROMPTS, got, strict=True):
        tokens, score = _greedy_reference(spec, params, prompt)
        assert prediction.tokens.tolist() == tokens
        assert prediction.score == pytest.approx(score, abs=1e-4)


def test_decoder_models_get_bos_zero_unless_configured():
    decoder, t5 = ModelSpec.from_config(DECODER), ModelSpec.from_config(T5)
    assert decode_config_for(decoder, DecodeConfig(), 7).bos_id == 0
    assert decode_config_for(decoder, DecodeConfig(), 7).prefix_lm
    assert not decode_config_for(t5, DecodeConfig(), 7).prefix_lm
    assert decode_config_for(decoder, DecodeConfig(bos_id=2), 7).bos_id == 2
    assert decode_config_for(t5, DecodeConfig(), 7).bos_id is None
    assert decode_config_for(t5, DecodeConfig(), 7).max_decode_length == 7


def _causal_greedy(spec: ModelSpec, params, prompt: np.ndarray, steps: int) -> list[int]:
    """Greedy continuation of `prompt` as transformers decodes: causal, nothing before it."""
    model, out = spec.merge(params), []
    for _ in range(steps):
        sequence = np.asarray([*prompt, *out], np.int32)
        out.append(int(np.argmax(model(jnp.asarray(sequence[None]), deterministic=True)[0, -1])))
    return out


def test_chat_prompts_decode_causally_and_stop_at_the_end_of_turn_token():
    spec = ModelSpec.from_config(dataclasses.replace(DECODER, num_layers=2))
    params = spec.init_params(jax.random.key(7))
    prompt = np.array([3, 17, 22, 9, 30])
    free = _causal_greedy(spec, params, prompt, NEW)
    stop = free[2]
    expected = free[:free.index(stop)]
    config = decode_config_for(spec, DecodeConfig(), NEW, chat_stop_id=stop)
    assert (config.bos_id, config.prefix_lm, config.eos_id) == (None, False, stop)
    predictor = Predictor(spec, DecodeConfig(), {"inputs": 8, "targets": NEW}, batch_size=2,
                          chat_stop_id=stop)
    assert predictor(params, [prompt])[0].tokens.tolist() == expected
    with pytest.raises(ValueError, match="decoder-only"):
        decode_config_for(ModelSpec.from_config(T5), DecodeConfig(), NEW, chat_stop_id=stop)
