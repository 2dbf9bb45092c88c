"""Sequence log-probabilities of packed pairs and the preference losses, against numpy
computations written out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from flantune.data.preference import PreferenceFeatureConverter
from flantune.preference import PreferenceConfig, PreferenceConfigError
from flantune.preference.losses import pair_log_probs, pair_losses, pair_metrics, pair_sums

VOCAB = 11


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    examples = []
    for i in range(9):
        prompt, chosen, rejected = (list(rng.integers(1, VOCAB, rng.integers(1, 5)))
                                    for _ in range(3))
        examples.append({"chosen": np.asarray(prompt + chosen),
                         "rejected": np.asarray(prompt + rejected),
                         "prompt_length": len(prompt), "task_index": i % 2})
    rows, _ = PreferenceFeatureConverter(pack=True).convert(examples, {"targets": 24})
    logits = rng.normal(size=(*rows["decoder_target_tokens"].shape, VOCAB)).astype(np.float32)
    return examples, rows, logits


def _sequence_log_prob(logits_row, inputs, targets, weights):
    """sum over completion tokens of log softmax(logits)[target], by hand in float64."""
    total = 0.0
    for t in range(len(targets)):
        z = logits_row[t].astype(np.float64)
        log_softmax = z - (np.log(np.sum(np.exp(z - z.max()))) + z.max())
        total += weights[t] * log_softmax[targets[t]]
    return total


def test_pair_log_probs_by_hand():
    examples, rows, logits = _batch()
    out = pair_log_probs(logits, rows)
    found = 0
    for r in range(rows["decoder_segment_ids"].shape[0]):
        segments = rows["decoder_segment_ids"][r]
        for k in range(segments.max() // 2):
            for name, segment in (("chosen", 2 * k + 1), ("rejected", 2 * k + 2)):
                where = segments == segment
                expected = _sequence_log_prob(
                    logits[r][where], rows["decoder_input_tokens"][r][where],
                    rows["decoder_target_tokens"][r][where], rows["decoder_loss_weights"][r][where])
                np.testing.assert_allclose(out[name][r, k], expected, rtol=1e-5)
                assert out[f"{name}_tokens"][r, k] == rows["decoder_loss_weights"][r][where].sum()
            assert out["valid"][r, k]
            found += 1
        assert not np.asarray(out["valid"][r, segments.max() // 2:]).any()
    assert found == len(examples)


def _softplus(x):
    return np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0)


@pytest.mark.parametrize("loss, smoothing", [("sigmoid", 0.0), ("sigmoid", 0.2), ("ipo", 0.0),
                                             ("hinge", 0.0)])
def test_losses_by_hand(loss, smoothing):
    rng = np.random.default_rng(1)
    policy = {"chosen": rng.normal(-20, 5, 7), "rejected": rng.normal(-20, 5, 7),
              "chosen_tokens": rng.integers(1, 9, 7).astype(float),
              "rejected_tokens": rng.integers(1, 9, 7).astype(float)}
    ref_c, ref_r = rng.normal(-20, 5, 7), rng.normal(-20, 5, 7)
    beta = 0.3
    config = PreferenceConfig(loss=loss, beta=beta, label_smoothing=smoothing)
    out = pair_losses({k: np.float32(v) for k, v in policy.items()}, np.float32(ref_c),
                      np.float32(ref_r), config)
    delta = (policy["chosen"] - ref_c) - (policy["rejected"] - ref_r)
    if loss == "sigmoid":  # -log sigmoid(x) = softplus(-x)
        expected = (1 - smoothing) * _softplus(-beta * delta) + smoothing * _softplus(beta * delta)
    elif loss == "hinge":
        expected = np.maximum(0.0, 1 - beta * delta)
    else:
        average = ((policy["chosen"] - ref_c) / policy["chosen_tokens"]
                   - (policy["rejected"] - ref_r) / policy["rejected_tokens"])
        expected = (average - 1 / (2 * beta)) ** 2
    np.testing.assert_allclose(out["loss"], expected, rtol=2e-5, atol=1e-5)
    np.testing.assert_allclose(out["chosen_reward"], beta * (policy["chosen"] - ref_c),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out["reward_accuracy"],
                                  (out["chosen_reward"] > out["rejected_reward"]))


def test_sums_average_over_pairs_and_split_by_task():
    _, rows, logits = _batch(2)
    policy = pair_log_probs(logits, rows)
    reference = pair_log_probs(np.roll(logits, 1, axis=-1), rows)
    config = PreferenceConfig(beta=0.5)
    sums = pair_sums(policy, reference["chosen"], reference["rejected"], config, num_tasks=2)
    per_pair = pair_losses(policy, reference["chosen"], reference["rejected"], config)
    valid = np.asarray(policy["valid"])
    tasks = np.asarray(policy["task"])[valid]
    assert sums["denominator"] == valid.sum() == 9
    np.testing.assert_allclose(sums["loss"], np.asarray(per_pair["loss"])[valid].sum(), rtol=1e-6)
    for task in (0, 1):
        np.testing.assert_allclose(sums["task_sum/loss"][task],
                                   np.asarray(per_pair["loss"])[valid][tasks == task].sum(),
                                   rtol=1e-6)
    assert sums["task_count"].tolist() == [5, 4]
    metrics = pair_metrics(sums)
    np.testing.assert_allclose(metrics["rewards/margin"],
                               np.asarray(per_pair["margin"])[valid].mean(), rtol=1e-5)


@pytest.mark.parametrize("options, message", [
    ({"loss": "kto"}, "not one of"), ({"beta": 0}, "positive"),
    ({"label_smoothing": 0.5}, r"\[0, 0.5\)"), ({"loss": "ipo", "label_smoothing": 0.1},
                                                "applies to loss='sigmoid'"),
    ({"eval_every_steps": -1}, "eval_every_steps"), ({"reference": ""}, "reference"),
])
def test_bad_settings_are_refused(options, message):
    with pytest.raises(PreferenceConfigError, match=message):
        PreferenceConfig(**options)


def test_the_reference_cache_refuses_values_of_other_tokens(tmp_path):
    from flantune.preference import PreferenceReferenceError
    from flantune.preference.reference import ReferenceCache

    _, rows, logits = _batch(3)
    scored = pair_log_probs(logits, rows)
    cache = ReferenceCache(str(tmp_path), key="k")
    cache.store(0, rows, np.asarray(scored["chosen"]), np.asarray(scored["rejected"]))
    cache.save()
    again = ReferenceCache(str(tmp_path), key="k")
    again.load()
    features = again.features(dict(rows), 0)
    valid = np.asarray(scored["valid"])
    np.testing.assert_array_equal(features["reference_chosen_logps"][valid],
                                  np.asarray(scored["chosen"])[valid])
    other = dict(rows, decoder_target_tokens=np.roll(rows["decoder_target_tokens"], 1, axis=1))
    with pytest.raises(PreferenceReferenceError, match="other tokens than step 0"):
        again.features(other, 0)
    stale = ReferenceCache(str(tmp_path), key="another run")
    stale.load()
    assert stale.values == {}
