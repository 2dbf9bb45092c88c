"""Loss functions against optax and hand-computed references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flantune.train.losses import (
    LossConfig,
    is_argmax,
    loss_sums,
    per_sequence_weights,
    token_losses,
)

RNG = np.random.default_rng(0)
LOGITS = jnp.asarray(RNG.normal(size=(2, 5, 11)) * 3, jnp.float32)
TARGETS = jnp.asarray(RNG.integers(0, 11, size=(2, 5)), jnp.int32)
WEIGHTS = jnp.asarray([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], jnp.float32)
SEGMENTS = jnp.asarray([[1, 1, 2, 0, 0], [1, 2, 2, 2, 3]], jnp.int32)


def test_plain_cross_entropy_equals_optax():
    loss, z, correct = token_losses(LOGITS, TARGETS)
    reference = optax.softmax_cross_entropy_with_integer_labels(LOGITS, TARGETS)
    np.testing.assert_allclose(loss, reference, rtol=1e-6)
    assert float(jnp.abs(z).max()) == 0.0
    np.testing.assert_array_equal(correct, jnp.argmax(LOGITS, -1) == TARGETS)


def test_is_argmax_agrees_with_numpy_on_ties_and_nans():
    """Small integer logits tie often; a target is the first maximum, a later tied maximum or
    random; NaNs count as the maximum (numpy's and jnp.argmax's rule)."""
    rng = np.random.default_rng(1)
    logits = rng.integers(0, 3, size=(64, 7)).astype(np.float32)
    logits[rng.random(logits.shape) < 0.05] = np.nan
    first_max = np.argmax(logits, -1)
    last_max = logits.shape[1] - 1 - np.argmax(logits[:, ::-1], -1)
    targets = np.where(rng.random(64) < 0.4, first_max,
                       np.where(rng.random(64) < 0.5, last_max, rng.integers(0, 7, 64)))
    target_logit = np.take_along_axis(logits, targets[:, None], -1)[:, 0]
    got = is_argmax(jnp.asarray(logits), jnp.asarray(targets, jnp.int32),
                    jnp.asarray(target_logit))
    expected = np.argmax(logits, -1) == targets
    np.testing.assert_array_equal(np.asarray(got), expected)
    assert 0 < expected.sum() < 64 and (first_max != last_max).any() and np.isnan(logits).any()


def test_z_loss_is_coefficient_times_squared_log_partition():
    loss, z, _ = token_losses(LOGITS, TARGETS, z_loss=1e-2)
    log_z = jax.nn.logsumexp(LOGITS, -1)
    np.testing.assert_allclose(z, 1e-2 * log_z ** 2, rtol=1e-6)
    np.testing.assert_allclose(loss - z, optax.softmax_cross_entropy_with_integer_labels(
        LOGITS, TARGETS), rtol=1e-5)


def test_label_smoothing_matches_the_smoothed_distribution_minus_its_entropy():
    smoothing, vocab = 0.1, LOGITS.shape[-1]
    loss, _, _ = token_losses(LOGITS, TARGETS, label_smoothing=smoothing)
    confidence, low = 1 - smoothing, smoothing / (vocab - 1)
    q = np.full(LOGITS.shape, low)
    np.put_along_axis(q, np.asarray(TARGETS)[..., None], confidence, axis=-1)
    log_p = np.asarray(jax.nn.log_softmax(LOGITS, -1), np.float64)
    entropy = -(confidence * np.log(confidence) + (vocab - 1) * low * np.log(low))
    np.testing.assert_allclose(loss, -(q * log_p).sum(-1) - entropy, rtol=1e-5, atol=1e-5)


def test_normalizations_by_hand():
    losses = np.asarray(optax.softmax_cross_entropy_with_integer_labels(LOGITS, TARGETS))
    weighted = (losses * np.asarray(WEIGHTS)).sum()
    real = loss_sums(LOGITS, TARGETS, WEIGHTS, LossConfig(z_loss=0.0))
    assert float(real["loss"] / real["denominator"]) == pytest.approx(weighted / 8, rel=1e-6)
    total = loss_sums(LOGITS, TARGETS, WEIGHTS, LossConfig(
        z_loss=0.0, normalization="NUM_TOTAL_TARGET_TOKENS"))
    assert float(total["loss"] / total["denominator"]) == pytest.approx(weighted / 10, rel=1e-6)
    constant = loss_sums(LOGITS, TARGETS, WEIGHTS, LossConfig(
        z_loss=0.0, normalization="CONSTANT", constant=4.0))
    assert float(constant["loss"] / constant["denominator"]) == pytest.approx(weighted / 4)
    per_seq = loss_sums(LOGITS, TARGETS, WEIGHTS, LossConfig(
        z_loss=0.0, normalization="AVERAGE_PER_SEQUENCE"), segment_ids=SEGMENTS)
    # Segments: row0 {1: tokens 0,1; 2: token 2}; row1 {1: 0; 2: 1,2,3; 3: 4}.
    means = [losses[0, :2].mean(), losses[0, 2], losses[1, 0], losses[1, 1:4].mean(),
             losses[1, 4]]
    assert float(per_seq["loss"] / per_seq["denominator"]) == pytest.approx(np.mean(means),
                                                                             rel=1e-5)
    assert float(real["correct"]) == float(((np.argmax(LOGITS, -1) == TARGETS) * WEIGHTS).sum())


def test_sums_over_microbatches_equal_the_full_batch():
    for normalization in ("NUM_REAL_TARGET_TOKENS", "AVERAGE_PER_SEQUENCE"):
        config = LossConfig(normalization=normalization, label_smoothing=0.05)
        full = loss_sums(LOGITS, TARGETS, WEIGHTS, config, segment_ids=SEGMENTS)
        parts = [loss_sums(LOGITS[i:i + 1], TARGETS[i:i + 1], WEIGHTS[i:i + 1], config,
                           segment_ids=SEGMENTS[i:i + 1]) for i in range(2)]
        for key in ("loss", "denominator", "weight", "correct"):
            assert float(full[key]) == pytest.approx(sum(float(p[key]) for p in parts),
                                                     rel=1e-6)


def test_per_task_sums():
    task_ids = jnp.asarray([[0, 0, 1, 0, 0], [2, 2, 2, 1, 1]], jnp.int32)
    sums = loss_sums(LOGITS, TARGETS, WEIGHTS, LossConfig(z_loss=0.0), task_ids=task_ids,
                     num_tasks=3)
    losses = np.asarray(optax.softmax_cross_entropy_with_integer_labels(LOGITS, TARGETS))
    np.testing.assert_allclose(sums["task_weight"], [2, 3, 3])
    np.testing.assert_allclose(sums["task_loss"], [losses[0, :2].sum(),
                                                   losses[0, 2] + losses[1, 3:].sum(),
                                                   losses[1, :3].sum()], rtol=1e-5)


def test_per_sequence_weights_without_segments_average_rows():
    scaled, count = per_sequence_weights(WEIGHTS, None)
    np.testing.assert_allclose(scaled.sum(-1), [1.0, 1.0])
    assert float(count) == 2


def test_per_sequence_weights_give_padding_segment_zero():
    """A nonzero weight on a segment-0 (padding) slot is dropped, as t5x's
    `_sum_weights_per_segment` does; each real segment's weights still sum to 1."""
    weights = jnp.asarray([[1, 1, 1, 1, 1]], jnp.float32)
    segments = jnp.asarray([[1, 1, 2, 0, 0]], jnp.int32)
    scaled, count = per_sequence_weights(weights, segments)
    np.testing.assert_allclose(scaled, [[0.5, 0.5, 1.0, 0.0, 0.0]])
    assert float(count) == 2


def test_bad_loss_configs():
    with pytest.raises(ValueError, match="Unknown loss normalization"):
        LossConfig(normalization="MEAN")
    with pytest.raises(ValueError, match="CONSTANT needs"):
        LossConfig(normalization="CONSTANT")
    with pytest.raises(ValueError, match="label_smoothing"):
        LossConfig(label_smoothing=1.0)
