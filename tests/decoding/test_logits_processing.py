"""Top-k, top-p and temperature on hand-made distributions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flantune.decoding import DecodeConfig, DecodeConfigError
from flantune.decoding.logits_processing import (
    choose_tokens,
    filtered_logits,
    top_k_filter,
    top_p_filter,
)

# Probabilities 0.05, 0.5, 0.1, 0.2, 0.15 for tokens 0..4 (ranked 1, 3, 4, 2, 0).
PROBS = np.array([0.05, 0.5, 0.1, 0.2, 0.15])
LOGITS = jnp.asarray(np.log(PROBS)[None], jnp.float32)


def _kept(logits: jax.Array) -> set[int]:
    return set(np.flatnonzero(np.isfinite(np.asarray(logits)[0])).tolist())


@pytest.mark.parametrize(("p", "expected"), [
    (0.3, {1}),               # 0.5 alone reaches 0.3
    (0.65, {1, 3}),           # 0.5 + 0.2 = 0.7 >= 0.65
    (0.8, {1, 3, 4}),         # 0.85
    (0.9, {1, 3, 4, 2}),      # 0.95
    (0.99, {0, 1, 2, 3, 4}),
])
def test_top_p_keeps_the_smallest_set_reaching_p(p, expected):
    filtered = top_p_filter(LOGITS, p)
    assert _kept(filtered) == expected
    kept = sorted(expected)
    np.testing.assert_allclose(np.asarray(filtered)[0, kept], np.asarray(LOGITS)[0, kept])


def test_top_k_keeps_the_k_largest():
    assert _kept(top_k_filter(LOGITS, 2)) == {1, 3}
    assert _kept(top_k_filter(LOGITS, 0)) == {0, 1, 2, 3, 4}


def test_filters_apply_temperature_first_then_top_k_then_top_p():
    config = DecodeConfig(method="sample", temperature=2.0, top_k=3, top_p=0.6)
    filtered = np.asarray(filtered_logits(LOGITS, config))[0]
    # At temperature 2 the top 3 renormalised are 0.5**.5 : 0.2**.5 : 0.15**.5 ~ 0.43, 0.27, 0.24
    # of the whole; within the top 3: 0.45, 0.29, 0.25 -> 0.45 + 0.29 >= 0.6 keeps two.
    assert set(np.flatnonzero(np.isfinite(filtered))) == {1, 3}
    np.testing.assert_allclose(filtered[[1, 3]], np.log(PROBS[[1, 3]]) / 2, rtol=1e-6)


def test_samples_follow_the_renormalised_nucleus():
    config = DecodeConfig(method="sample", top_p=0.8)
    logits = jnp.tile(LOGITS, (20000, 1))
    tokens = np.asarray(choose_tokens(logits, config, jax.random.key(0)))
    counts = np.bincount(tokens, minlength=5) / len(tokens)
    expected = np.array([0, 0.5, 0, 0.2, 0.15]) / 0.85
    np.testing.assert_allclose(counts, expected, atol=0.015)


def test_bad_config_values_are_named():
    with pytest.raises(DecodeConfigError, match="top_p"):
        DecodeConfig(top_p=0.0)
    with pytest.raises(DecodeConfigError, match="method"):
        DecodeConfig(method="nucleus")
    with pytest.raises(DecodeConfigError, match="eos_id"):
        DecodeConfig(eos_id=0, pad_id=0)
