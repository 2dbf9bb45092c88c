"""Log-likelihood scoring against hand computations from the model's own logits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flantune.evaluation.scoring import Scorer, sequence_log_likelihood
from flantune.models import DecoderConfig, T5Config
from flantune.train.state import ModelSpec

T5 = T5Config(vocab_size=64, emb_dim=32, num_heads=2, head_dim=16, mlp_dim=48,
              num_encoder_layers=1, num_decoder_layers=1, relative_attention_num_buckets=8,
              relative_attention_max_distance=6)
DECODER = DecoderConfig(vocab_size=64, emb_dim=32, num_heads=2, num_kv_heads=1, head_dim=16,
                        mlp_dim=48, num_layers=1)
PAIRS = [(np.array([5, 9, 12, 1]), np.array([7, 8, 1])),
         (np.array([3, 1]), np.array([20, 21, 22, 23, 1])),
         (np.array([40, 41, 42, 43, 44, 1]), np.array([1]))]


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_sequence_log_likelihood_sums_weighted_target_log_probs():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 4, 6)).astype(np.float32)
    targets = np.array([[1, 2, 3, 0], [4, 5, 0, 0]])
    weights = np.array([[1, 1, 1, 0], [1, 1, 0, 0]])
    expected = [sum(_log_softmax(logits[b, t])[targets[b, t]] for t in range(4) if weights[b, t])
                for b in range(2)]
    got = sequence_log_likelihood(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_packed_rows_score_each_segment_separately():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(1, 6, 5)).astype(np.float32)
    targets = np.array([[1, 2, 3, 4, 1, 0]])
    weights = np.array([[1, 1, 1, 1, 1, 0]])
    segments = np.array([[1, 1, 2, 2, 2, 0]])
    got = sequence_log_likelihood(jnp.asarray(logits), jnp.asarray(targets),
                                  jnp.asarray(weights), jnp.asarray(segments), max_segments=3)
    lp = _log_softmax(logits[0])
    expected = [lp[0, 1] + lp[1, 2], lp[2, 3] + lp[3, 4] + lp[4, 1], 0.0]
    np.testing.assert_allclose(got[0], expected, rtol=1e-5)
    with pytest.raises(ValueError, match="max_segments"):
        sequence_log_likelihood(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights),
                                jnp.asarray(segments))


def _reference(spec: ModelSpec, params, inputs: np.ndarray, targets: np.ndarray) -> float:
    """One example alone, through the model's __call__, summed by hand."""
    model = spec.merge(params)
    if spec.family == "enc_dec":
        decoder_inputs = np.concatenate([[0], targets[:-1]])
        logits = model(encoder_input_tokens=jnp.asarray(inputs[None]),
                       decoder_input_tokens=jnp.asarray(decoder_inputs[None]),
                       deterministic=True)[0]
        positions = range(len(targets))
        return float(sum(_log_softmax(np.asarray(logits[t]))[targets[t]] for t in positions))
    sequence = np.concatenate([inputs, targets])
    decoder_inputs = np.concatenate([[0], sequence[:-1]])
    causal = (np.arange(len(sequence)) <= len(inputs)).astype(np.int32)
    logits = model(jnp.asarray(decoder_inputs[None]),
                   decoder_causal_attention=jnp.asarray(causal[None]), deterministic=True)[0]
    return float(sum(_log_softmax(np.asarray(logits[len(inputs) + t]))[targets[t]]
                     for t in range(len(targets))))


@pytest.mark.parametrize("config", [T5, DECODER], ids=["t5", "decoder"])
def test_scorer_equals_a_hand_computation_from_the_logits(config):
    spec = ModelSpec.from_config(config)
    params = spec.init_params(jax.random.key(3))
    scorer = Scorer(spec, {"inputs": 8, "targets": 6}, batch_size=2)  # 3 pairs: a padded batch
    got = scorer(params, PAIRS)
    expected = [_reference(spec, params, i, t) for i, t in PAIRS]
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-5)
    assert got.shape == (3,)
