"""Beam search: one beam is greedy; with enough beams it is an exhaustive search, checked against
brute-force enumeration of every output scored by the full (uncached) forward pass."""

from __future__ import annotations

import dataclasses
import itertools

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flantune.decoding import DecodeConfig, generate, left_pad_prompts, length_penalty
from flantune.models import build_model
from tests.decoding.tiny import DECODER_TINY, PROMPTS, T5_TINY, encoder_batch
from tests.models.jit_forward import forward


@pytest.mark.parametrize("family", ["t5", "decoder"])
def test_one_beam_equals_greedy(family):
    if family == "t5":
        model, batch = build_model(T5_TINY, nnx.Rngs(4)), {"encoder_input_tokens": encoder_batch()}
    else:
        model, batch = build_model(DECODER_TINY, nnx.Rngs(4)), left_pad_prompts(PROMPTS)
    greedy = generate(model, batch, DecodeConfig(max_decode_length=10))
    # EOS as a token greedy decoding emits in row 0, so a row finishes early.
    eos = int(greedy.tokens[0, 5])
    greedy = generate(model, batch, DecodeConfig(max_decode_length=10, eos_id=eos))
    beam = generate(model, batch, DecodeConfig(max_decode_length=10, eos_id=eos, method="beam",
                                               num_beams=1, length_penalty=0.0))
    np.testing.assert_array_equal(beam.tokens, greedy.tokens)
    np.testing.assert_allclose(beam.scores, greedy.scores, rtol=1e-5)


def test_length_penalty_is_gnmt():
    np.testing.assert_allclose(length_penalty(7, 0.6), (12 / 6) ** 0.6)
    np.testing.assert_allclose(length_penalty(3, 0.0), 1.0)


VOCAB, LENGTH, EOS = 5, 3, 1
# (VOCAB - 1) ** (LENGTH - 1) = 16 live prefixes and at most 20 candidates per step fit in 25
# beams, so beam search keeps every prefix: it must find the best of all outputs.
BEAMS = 25


def _all_outputs(log_prob_of) -> dict[tuple[int, ...], tuple[float, int]]:
    """Every distinct output (cut after its first EOS, padded with 0) -> (log p, length)."""
    outputs = {}
    for seq in itertools.product(range(VOCAB), repeat=LENGTH):
        log_probs = log_prob_of(seq)
        end = seq.index(EOS) + 1 if EOS in seq else LENGTH
        padded = seq[:end] + (0,) * (LENGTH - end)
        outputs[padded] = (float(sum(log_probs[:end])), end)
    return outputs


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def _check_against_enumeration(got, narrow, per_row_log_probs, alpha: float) -> int:
    """Asserts each row's beam output is the best enumerated one and that a 2-beam search
    (`narrow`) misses it in some row (so the test tells searches apart); returns how many best
    outputs end with EOS before the last step."""
    early = 0
    missed = 0
    for row, log_prob_of in enumerate(per_row_log_probs):
        outputs = _all_outputs(log_prob_of)
        scores = {seq: lp / ((5 + n) / 6) ** alpha for seq, (lp, n) in outputs.items()}
        best = max(scores, key=scores.get)
        ranked = sorted(scores.values(), reverse=True)
        assert ranked[0] - ranked[1] > 1e-4  # a unique best: the comparison is meaningful
        assert tuple(got.tokens[row]) == best, (row, got.tokens[row], best)
        np.testing.assert_allclose(got.scores[row], scores[best], rtol=1e-5)
        early += outputs[best][1] < LENGTH
        missed += tuple(narrow.tokens[row]) != best
    assert missed > 0
    return early


@pytest.mark.parametrize("alpha", [0.0, 2.0])
def test_t5_beam_search_equals_exhaustive_enumeration(alpha):
    config = dataclasses.replace(T5_TINY, vocab_size=VOCAB, scan_layers=True)
    model = build_model(config, nnx.Rngs(2))
    enc = np.random.default_rng(5).integers(2, VOCAB, (6, 7)).astype(np.int32)
    enc[2, 4:] = 0
    results = [generate(model, {"encoder_input_tokens": enc},
                        DecodeConfig(max_decode_length=LENGTH, method="beam", num_beams=beams,
                                     length_penalty=alpha, eos_id=EOS)) for beams in (BEAMS, 2)]
    seqs = np.asarray(list(itertools.product(range(VOCAB), repeat=LENGTH)), np.int32)
    decoder_inputs = np.concatenate([np.zeros((len(seqs), 1), np.int32), seqs[:, :-1]], axis=1)
    tables = []
    for row in range(len(enc)):
        logits = forward(model, jnp.asarray(np.repeat(enc[row:row + 1], len(seqs), axis=0)),
                         jnp.asarray(decoder_inputs))
        lp = np.take_along_axis(_log_softmax(logits), seqs[:, :, None], axis=-1)[..., 0]
        tables.append({tuple(s): lp[i] for i, s in enumerate(seqs.tolist())})
    _check_against_enumeration(*results, [t.__getitem__ for t in tables], alpha)


def test_decoder_beam_search_equals_exhaustive_enumeration():
    config = dataclasses.replace(DECODER_TINY, vocab_size=VOCAB)
    model = build_model(config, nnx.Rngs(3))
    prompts = [[2, 3, 4], [4, 2], [3], [2, 2, 3, 4]]
    results = [generate(model, left_pad_prompts(prompts),
                        DecodeConfig(max_decode_length=LENGTH, method="beam", num_beams=beams,
                                     length_penalty=0.0, eos_id=EOS)) for beams in (BEAMS, 2)]
    seqs = np.asarray(list(itertools.product(range(VOCAB), repeat=LENGTH)), np.int32)
    tables = []
    for prompt in prompts:
        inputs = np.concatenate([np.tile(prompt, (len(seqs), 1)), seqs[:, :-1]], axis=1)
        logits = forward(model, jnp.asarray(inputs, jnp.int32))[:, len(prompt) - 1:]
        lp = np.take_along_axis(_log_softmax(logits), seqs[:, :, None], axis=-1)[..., 0]
        tables.append({tuple(s): lp[i] for i, s in enumerate(seqs.tolist())})
    early = _check_against_enumeration(*results, [t.__getitem__ for t in tables], 0.0)
    assert early > 0  # some best output stops at EOS early: finishing is exercised


def test_beam_beats_or_equals_greedy_and_pads_after_eos():
    model = build_model(T5_TINY, nnx.Rngs(4))
    batch = {"encoder_input_tokens": encoder_batch()}
    greedy = generate(model, batch, DecodeConfig(max_decode_length=10, eos_id=7))
    beam = generate(model, batch, DecodeConfig(max_decode_length=10, eos_id=7, method="beam",
                                               num_beams=4, length_penalty=0.0))
    assert (beam.scores >= greedy.scores - 1e-5).all()
    for row in beam.tokens:
        if 7 in row:
            assert (row[int(np.argmax(row == 7)) + 1:] == 0).all()

