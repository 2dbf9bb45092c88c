"""Attention masks built from SeqIO features, against hand-written expectations."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from flantune.models import masks
from flantune.models.attention import MASK_VALUE


def _m(rows: list[str]) -> np.ndarray:
    return np.array([[c == "1" for c in row] for row in rows])


def test_causal_segments_and_padding():
    segments = jnp.asarray([[1, 1, 2, 2, 0]])
    got = masks.decoder_only_mask(5, segment_ids=segments, causal_attention=None,
                                  sliding_window=None)
    expected = _m(["10000",
                   "11000",
                   "00100",
                   "00110",
                   "00000"])
    np.testing.assert_array_equal(np.asarray(got)[0, 0], expected)


def test_prefix_lm_is_bidirectional_on_inputs_only():
    prefix = jnp.asarray([[1, 1, 1, 0, 0]])
    got = masks.decoder_only_mask(5, segment_ids=None, causal_attention=prefix,
                                  sliding_window=None)
    expected = _m(["11100",
                   "11100",
                   "11100",
                   "11110",
                   "11111"])
    np.testing.assert_array_equal(np.asarray(got)[0, 0], expected)


def test_sliding_window_keeps_the_last_window_tokens():
    got = masks.decoder_only_mask(5, segment_ids=None, causal_attention=None, sliding_window=2)
    expected = _m(["10000",
                   "11000",
                   "01100",
                   "00110",
                   "00011"])
    np.testing.assert_array_equal(np.asarray(got)[0, 0], expected)


def test_cross_segment_mask_pairs_decoder_and_encoder_segments():
    decoder_segments = jnp.asarray([[1, 1, 2, 0]])
    encoder_segments = jnp.asarray([[1, 2, 2, 0, 0]])
    got = masks.segment_mask(decoder_segments, encoder_segments)
    expected = _m(["10000",
                   "10000",
                   "01100",
                   "00000"])
    np.testing.assert_array_equal(np.asarray(got)[0, 0], expected)


def test_mask_to_bias_adds_bias_where_allowed():
    mask = jnp.asarray([[[[True, False]]]])
    bias = jnp.asarray([[[[0.5, 0.25]]]])
    got = np.asarray(masks.mask_to_bias(mask, bias))
    np.testing.assert_array_equal(got, [[[[0.5, MASK_VALUE]]]])
