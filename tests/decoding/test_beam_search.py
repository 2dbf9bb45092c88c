"""Beam search. t5x semantics (the default): the issue's example computed by hand, exhaustive
search against enumeration of every output. Hugging Face semantics: equal to transformers'
`generate` for each `early_stopping`, one beam is greedy, exhaustive search against enumeration.
Searches over a toy decoder read next-token log-probabilities from a table indexed by prefix."""

from __future__ import annotations

import dataclasses
import itertools

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flantune.decoding import (
    DecodeConfig,
    DecodeConfigError,
    generate,
    left_pad_prompts,
    length_penalty,
)
from flantune.decoding.beam_search import beam_search
from flantune.models import build_model, load_hf_checkpoint
from tests.decoding.tiny import DECODER_TINY, PROMPTS, T5_TINY, encoder_batch
from tests.models.jit_forward import forward


def _table_search(tables: np.ndarray, config: DecodeConfig) -> tuple[np.ndarray, np.ndarray]:
    """Beam search over toy decoders: row r's next-token log-probs after prefix t_1..t_m are
    `tables[r, code]`, code = the digits 1 t_1 ... t_m in base vocab (1 for the empty prefix)."""
    tables = jnp.asarray(tables, jnp.float32)
    batch, _, vocab = tables.shape
    cache = {"layers": (), "code": jnp.ones((batch,), jnp.int32), "row": jnp.arange(batch)}

    def step(tokens, cache, i):
        code = cache["code"] * vocab + tokens
        return tables[cache["row"], code], {**cache, "code": code}

    tokens, scores = jax.jit(lambda t: beam_search(t[:, 1], cache, step, config))(tables)
    return np.asarray(tokens), np.asarray(scores)


def _issue_table(eos_prob: float) -> np.ndarray:
    """Vocabulary (pad, EOS, 2, 3); 3 decoded tokens. First token: 3 (p = 0.5388), 2, then EOS
    (`eos_prob`), 3rd of 4 candidates; after any prefix: 3 (0.5388), 2 (0.3), EOS (0.16)."""
    table = np.tile(np.log([0.0012, 0.16, 0.3, 0.5388]), (2 * 4 ** 2, 1))
    table[1] = np.log([0.001, eos_prob, 1 - 0.5388 - eos_prob - 0.001, 0.5388])
    return table[None]


ISSUE = DecodeConfig(method="beam", num_beams=2, max_decode_length=3, length_penalty=0.0)


@pytest.mark.parametrize("eos_prob", [np.exp(-1.518), 0.05])
def test_t5x_keeps_an_eos_hypothesis_outside_the_top_k_and_prefers_it(eos_prob):
    """With 2 beams, [EOS] (log p -1.518) is 3rd of the 4 first-step candidates. t5x keeps it in
    its finished pool and returns it; it also returns it when its log p (log 0.05 = -3.0) is
    below the truncated [3, 3, 3]'s (3 log 0.5388 = -1.855), which Hugging Face returns: EOS is
    not among its top 2 there, and the cut-off beams count as finished."""
    tokens, scores = _table_search(_issue_table(eos_prob), ISSUE)
    np.testing.assert_array_equal(tokens, [[1, 0, 0]])
    np.testing.assert_allclose(scores, [np.log(eos_prob)], rtol=1e-6)
    tokens, scores = _table_search(_issue_table(eos_prob),
                                   dataclasses.replace(ISSUE, beam_semantics="hf"))
    np.testing.assert_array_equal(tokens, [[3, 3, 3]])
    np.testing.assert_allclose(scores, [3 * np.log(0.5388)], rtol=1e-6)


def test_t5x_returns_the_best_cut_off_beam_with_its_log_prob_if_none_finished():
    """EOS is never among the 2 best extensions of the one beam: nothing finishes, and the row
    gets its live beam [5, 5, 5] scored by its plain log p (no length penalty), as in t5x."""
    table = np.tile(np.log([1e-6, 1e-6, 0.1, 0.2, 0.3, 0.4 - 2e-6]), (2 * 6 ** 2, 1))
    config = DecodeConfig(method="beam", num_beams=1, max_decode_length=3, length_penalty=0.6)
    tokens, scores = _table_search(table[None], config)
    np.testing.assert_array_equal(tokens, [[5, 5, 5]])
    np.testing.assert_allclose(scores, [3 * np.log(0.4 - 2e-6)], rtol=1e-6)


def test_beam_semantics_and_early_stopping_are_checked_and_gin_bindable():
    with pytest.raises(DecodeConfigError, match="beam_semantics"):
        DecodeConfig(beam_semantics="fairseq")
    with pytest.raises(DecodeConfigError, match="early_stopping.*t5x beam search has none"):
        DecodeConfig(early_stopping=True)
    with pytest.raises(DecodeConfigError, match="early_stopping"):
        DecodeConfig(beam_semantics="hf", early_stopping="always")
    with pytest.raises(DecodeConfigError, match="early_stopping"):
        DecodeConfig(beam_semantics="hf", early_stopping=1)
    assert DecodeConfig().beam_semantics == "t5x"
    import flantune.gin_config  # noqa: F401  (registers flantune.DecodeConfig)

    gin.clear_config()
    try:
        gin.parse_config(["flantune.DecodeConfig.beam_semantics = 'hf'",
                          "flantune.DecodeConfig.early_stopping = 'never'"])
        config = gin.get_configurable("flantune.DecodeConfig")()
    finally:
        gin.clear_config()
    assert (config.beam_semantics, config.early_stopping) == ("hf", "never")


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
    # Hugging Face's one-beam search is greedy; t5x's keeps EOS extensions ranked 2nd too.
    beam = generate(model, batch, DecodeConfig(max_decode_length=10, eos_id=eos, method="beam",
                                               num_beams=1, length_penalty=0.0,
                                               beam_semantics="hf"))
    np.testing.assert_array_equal(beam.tokens, greedy.tokens)
    np.testing.assert_allclose(beam.scores, greedy.scores, rtol=1e-5)


HF_NEW_TOKENS = 6


@pytest.fixture(scope="module")
def hf_t5_pair(tmp_path_factory):
    """A tiny Hugging Face T5 and the same model in flantune."""
    pytest.importorskip("torch")
    from tests.models import hf_reference as ref

    hf_model = ref.t5("v1_1", seed=11)
    config, params = load_hf_checkpoint(ref.save(hf_model, tmp_path_factory.mktemp("t5_beam")))
    return hf_model, build_model(config, params=params)


def _transformers_beam(hf_model, enc: np.ndarray, eos: int, **kwargs) -> tuple[np.ndarray, ...]:
    """transformers' beam search: tokens after the decoder start, 0 after EOS (transformers
    pads with EOS when pad_token_id is 0), and `sequences_scores`."""
    import torch
    import transformers

    # An explicit cache: transformers sizes its default one by the encoder's layer count.
    cache = transformers.EncoderDecoderCache(transformers.DynamicCache(),
                                             transformers.DynamicCache())
    with torch.no_grad():
        out = hf_model.generate(
            input_ids=torch.tensor(enc, dtype=torch.long),
            attention_mask=torch.tensor(enc > 0).long(), max_new_tokens=HF_NEW_TOKENS,
            min_new_tokens=0, do_sample=False, eos_token_id=eos, pad_token_id=0,
            decoder_start_token_id=0, repetition_penalty=1.0, output_scores=True,
            return_dict_in_generate=True, past_key_values=cache, **kwargs)
    tokens = np.zeros((len(enc), HF_NEW_TOKENS), np.int32)
    generated = out.sequences.numpy()[:, 1:]
    tokens[:, :generated.shape[1]] = generated
    for row in tokens:
        ends = np.flatnonzero(row == eos)
        if ends.size:
            row[ends[0] + 1:] = 0
    return tokens, out.sequences_scores.numpy()


@pytest.mark.slow
def test_hf_semantics_equal_transformers_generate(hf_t5_pair):
    """For each `early_stopping` and length penalty, tokens and scores equal transformers' beam
    search on a tiny T5. EOS is a token greedy decoding emits often, so beams finish at many
    lengths; the settings change some outputs (the comparison tells them apart), and t5x's
    search returns other outputs than transformers' in some rows."""
    hf_model, model = hf_t5_pair
    enc = np.random.default_rng(4).integers(2, 96, (8, 11)).astype(np.int32)
    enc[1, 7:] = 0
    enc[2, 3:] = 0
    batch = {"encoder_input_tokens": enc}
    greedy = generate(model, batch, DecodeConfig(max_decode_length=HF_NEW_TOKENS, eos_id=1))
    values, counts = np.unique(greedy.tokens[:, 1:], return_counts=True)
    changed_by_early_stopping = t5x_differs = 0
    for eos, beams in zip(values[np.argsort(-counts, kind="stable")][:2], (3, 2), strict=True):
        base = DecodeConfig(max_decode_length=HF_NEW_TOKENS, method="beam", eos_id=int(eos),
                            num_beams=beams, beam_semantics="hf")
        for alpha in (0.0, 2.0):
            got = {}
            for early_stopping in ((False,) if alpha == 0 else (False, True, "never")):
                config = dataclasses.replace(base, length_penalty=alpha,
                                             early_stopping=early_stopping)
                got[early_stopping] = generate(model, batch, config)
                tokens, scores = _transformers_beam(
                    hf_model, enc, int(eos), num_beams=beams, length_penalty=alpha,
                    early_stopping=early_stopping)
                np.testing.assert_array_equal(got[early_stopping].tokens, tokens,
                                              err_msg=f"{config}")
                np.testing.assert_allclose(got[early_stopping].scores, scores, rtol=1e-4,
                                           atol=1e-4, err_msg=f"{config}")
            changed_by_early_stopping += sum(
                int((g.tokens != got[False].tokens).any(-1).sum()) for g in got.values())
            if alpha == 0:  # both length penalties are 1: only the semantics differ
                t5x = generate(model, batch, dataclasses.replace(
                    base, beam_semantics="t5x", length_penalty=0.0))
                t5x_differs += int((t5x.tokens != got[False].tokens).any(-1).sum())
    assert changed_by_early_stopping > 0 and t5x_differs > 0


def test_length_penalty_is_gnmt():
    np.testing.assert_allclose(length_penalty(7, 0.6), (12 / 6) ** 0.6)
    np.testing.assert_allclose(length_penalty(3, 0.0), 1.0)


VOCAB, LENGTH, EOS = 5, 3, 1
# At most (VOCAB - 1) ** (LENGTH - 1) = 16 live prefixes and 16 * VOCAB = 80 candidates per
# step: with 40 beams the 2k = 80 best candidates are all of them, so beam search keeps every
# prefix and every EOS extension (Hugging Face's "never" also finishes every EOS extension and
# the best cut-off one): it must find the best of all outputs.
BEAMS = 40
EXHAUSTIVE = {"t5x": {}, "hf": {"beam_semantics": "hf", "early_stopping": "never"}}


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


def _enumerated_scores(outputs: dict, semantics: str, alpha: float) -> dict:
    """t5x: the outputs ending in EOS, log p / ((5 + n) / 6) ** alpha; Hugging Face: every
    output (cut-off ones finish too), log p / n ** alpha."""
    if semantics == "t5x":
        return {seq: lp / ((5 + n) / 6) ** alpha for seq, (lp, n) in outputs.items()
                if EOS in seq}
    return {seq: lp / n ** alpha for seq, (lp, n) in outputs.items()}


def _check_against_enumeration(got, narrow, per_row_log_probs, semantics: str,
                               alpha: float) -> int:
    """Asserts each row's beam output is the best enumerated one and that a 2-beam search
    (`narrow`) misses it in some row (so the test tells searches apart); returns how many best
    outputs end with EOS before the last step."""
    early = 0
    missed = 0
    for row, log_prob_of in enumerate(per_row_log_probs):
        outputs = _all_outputs(log_prob_of)
        scores = _enumerated_scores(outputs, semantics, alpha)
        best = max(scores, key=scores.get)
        ranked = sorted(scores.values(), reverse=True)
        assert ranked[0] - ranked[1] > 1e-4  # a unique best: the comparison is meaningful
        assert tuple(got.tokens[row]) == best, (row, got.tokens[row], best)
        np.testing.assert_allclose(got.scores[row], scores[best], rtol=1e-5)
        early += outputs[best][1] < LENGTH
        missed += tuple(narrow.tokens[row]) != best
    assert missed > 0
    return early


@pytest.mark.parametrize("semantics", ["t5x", "hf"])
@pytest.mark.parametrize("alpha", [0.0, 2.0])
def test_t5_beam_search_equals_exhaustive_enumeration(alpha, semantics):
    config = dataclasses.replace(T5_TINY, vocab_size=VOCAB, scan_layers=True)
    model = build_model(config, nnx.Rngs(2))
    enc = np.random.default_rng(5).integers(2, VOCAB, (6, 7)).astype(np.int32)
    enc[2, 4:] = 0
    results = [generate(model, {"encoder_input_tokens": enc},
                        DecodeConfig(max_decode_length=LENGTH, method="beam", num_beams=beams,
                                     length_penalty=alpha, eos_id=EOS, **EXHAUSTIVE[semantics]))
               for beams in (BEAMS, 2)]
    seqs = np.asarray(list(itertools.product(range(VOCAB), repeat=LENGTH)), np.int32)
    decoder_inputs = np.concatenate([np.zeros((len(seqs), 1), np.int32), seqs[:, :-1]], axis=1)
    tables = []
    for row in range(len(enc)):
        logits = forward(model, jnp.asarray(np.repeat(enc[row:row + 1], len(seqs), axis=0)),
                         jnp.asarray(decoder_inputs))
        lp = np.take_along_axis(_log_softmax(logits), seqs[:, :, None], axis=-1)[..., 0]
        tables.append({tuple(s): lp[i] for i, s in enumerate(seqs.tolist())})
    _check_against_enumeration(*results, [t.__getitem__ for t in tables], semantics, alpha)


@pytest.mark.parametrize("semantics", ["t5x", "hf"])
def test_decoder_beam_search_equals_exhaustive_enumeration(semantics):
    config = dataclasses.replace(DECODER_TINY, vocab_size=VOCAB)
    model = build_model(config, nnx.Rngs(3))
    prompts = [[2, 3, 4], [4, 2], [3], [2, 2, 3, 4]]
    results = [generate(model, left_pad_prompts(prompts),
                        DecodeConfig(max_decode_length=LENGTH, method="beam", num_beams=beams,
                                     length_penalty=0.0, eos_id=EOS, **EXHAUSTIVE[semantics]))
               for beams in (BEAMS, 2)]
    seqs = np.asarray(list(itertools.product(range(VOCAB), repeat=LENGTH)), np.int32)
    tables = []
    for prompt in prompts:
        inputs = np.concatenate([np.tile(prompt, (len(seqs), 1)), seqs[:, :-1]], axis=1)
        logits = forward(model, jnp.asarray(inputs, jnp.int32))[:, len(prompt) - 1:]
        lp = np.take_along_axis(_log_softmax(logits), seqs[:, :, None], axis=-1)[..., 0]
        tables.append({tuple(s): lp[i] for i, s in enumerate(seqs.tolist())})
    early = _check_against_enumeration(*results, [t.__getitem__ for t in tables], semantics,
                                       0.0)
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

