"""Sampling: limits that must equal greedy decoding, reproducibility by key."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from flantune.decoding import DecodeConfig, generate, left_pad_prompts
from flantune.models import build_model
from tests.decoding.tiny import DECODER_TINY, PROMPTS, T5_TINY, encoder_batch

LENGTH = 10


@pytest.fixture(scope="module", params=["t5", "decoder"])
def model_and_batch(request):
    if request.param == "t5":
        return build_model(T5_TINY, nnx.Rngs(3)), {"encoder_input_tokens": encoder_batch()}
    return build_model(DECODER_TINY, nnx.Rngs(3)), left_pad_prompts(PROMPTS)


def _run(model_and_batch, rng=None, **overrides):
    model, batch = model_and_batch
    config = DecodeConfig(max_decode_length=LENGTH, eos_id=95, **overrides)
    return generate(model, batch, config, rng=rng)


@pytest.mark.parametrize("settings", [dict(temperature=1e-4), dict(top_k=1),
                                      dict(top_p=1e-6), dict(temperature=0.0)])
def test_sampling_limits_equal_greedy(model_and_batch, settings):
    greedy = _run(model_and_batch)
    sampled = _run(model_and_batch, rng=jax.random.key(5), method="sample", **settings)
    np.testing.assert_array_equal(sampled.tokens, greedy.tokens)
    np.testing.assert_allclose(sampled.scores, greedy.scores, rtol=1e-6)


def test_sampling_is_reproducible_by_key(model_and_batch):
    first = _run(model_and_batch, rng=jax.random.key(1), method="sample", temperature=1.5)
    again = _run(model_and_batch, rng=jax.random.key(1), method="sample", temperature=1.5)
    other = _run(model_and_batch, rng=jax.random.key(2), method="sample", temperature=1.5)
    greedy = _run(model_and_batch)
    np.testing.assert_array_equal(first.tokens, again.tokens)
    assert not np.array_equal(first.tokens, other.tokens)
    assert not np.array_equal(first.tokens, greedy.tokens)
    # Scores are the model's log-probabilities of the sampled tokens: below greedy's here.
    assert (first.scores < 0).all() and first.scores.sum() < greedy.scores.sum()
