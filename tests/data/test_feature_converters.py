"""Feature converters against SeqIO's own converters as the reference.

Raw token sequences (no EOS) go two ways: to flantune with EOS appended, and to SeqIO through
``append_eos_after_trim`` (its truncation) and then ``seqio.EncDecFeatureConverter`` /
``seqio.DecoderFeatureConverter`` on tf.data.
"""

from __future__ import annotations

import numpy as np
import pytest

from flantune.data.errors import DataError
from flantune.data.feature_converters import (
    ConversionStats,
    DecoderFeatureConverter,
    EncDecFeatureConverter,
)

tf = pytest.importorskip("tensorflow")
seqio = pytest.importorskip("seqio")

EOS = 1


# --- helpers ---------------------------------------------------------------------------------
def raw_examples(n: int, seed: int, max_inputs: int = 40, max_targets: int = 14,
                 with_inputs: bool = True) -> list[dict[str, np.ndarray]]:
    """Random token sequences without EOS; ids in [2, 300); some long enough to be truncated."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ex = {"targets": rng.integers(2, 300, rng.integers(0, max_targets + 1)).astype(np.int32)}
        if with_inputs:
            ex["inputs"] = rng.integers(2, 300, rng.integers(0, max_inputs + 1)).astype(np.int32)
        out.append(ex)
    return out


def with_eos(raw: list[dict], task_ids: bool = True) -> list[dict]:
    """flantune's input: EOS appended; task_index = example index + 1 to identify segments."""
    out = []
    for i, ex in enumerate(raw):
        d = {k: np.append(v, EOS).astype(np.int32) for k, v in ex.items()}
        if task_ids:
            d["task_index"] = i + 1
        out.append(d)
    return out


def seqio_trimmed(raw: list[dict], lengths: dict[str, int]) -> list[dict[str, np.ndarray]]:
    """SeqIO's truncation: ``append_eos_after_trim`` with the task feature lengths."""
    vocab = seqio.PassThroughVocabulary(size=300, eos_id=EOS)
    features = {k: seqio.Feature(vocab, add_eos=True) for k in lengths}
    out = []
    for ex in raw:
        tensors = {k: tf.constant(ex[k], tf.int32) for k in lengths}
        trimmed = seqio.preprocessors.append_eos_after_trim_impl(tensors, features, lengths)
        out.append({k: v.numpy() for k, v in trimmed.items()})
    return out


def run_seqio(converter, examples: list[dict], lengths: dict[str, int]) -> dict[str, np.ndarray]:
    """Runs a SeqIO converter on examples; returns stacked [rows, length] arrays."""
    keys = list(lengths)
    ds = tf.data.Dataset.from_generator(
        lambda: iter([{k: ex[k] for k in keys} for ex in examples]),
        output_signature={k: tf.TensorSpec([None], tf.int32) for k in keys},
    )
    rows = list(converter(ds, lengths).as_numpy_iterator())
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def segment_example_ids(out: dict[str, np.ndarray]) -> dict[tuple[int, int], int]:
    """(row, segment id) -> example index, read from decoder_task_ids (= index + 1)."""
    ids = {}
    for r, s in zip(*np.nonzero(out["decoder_segment_ids"]), strict=True):
        key = (int(r), int(out["decoder_segment_ids"][r, s]))
        ids.setdefault(key, int(out["decoder_task_ids"][r, s]) - 1)
        assert ids[key] == out["decoder_task_ids"][r, s] - 1, "segment holds two examples"
    return ids


ENC_DEC_LENGTHS = {"inputs": 32, "targets": 12}
PREFIX_LENGTHS = {"inputs": 24, "targets": 10}


# --- encoder-decoder -------------------------------------------------------------------------
def test_encdec_unpacked_equals_seqio_exactly():
    raw = raw_examples(40, seed=0)
    ours, stats = EncDecFeatureConverter(pack=False).convert(with_eos(raw, task_ids=False),
                                                              ENC_DEC_LENGTHS)
    ref = run_seqio(seqio.EncDecFeatureConverter(pack=False), seqio_trimmed(raw, ENC_DEC_LENGTHS),
                    ENC_DEC_LENGTHS)
    assert set(ours) == set(ref)
    for k in ref:
        np.testing.assert_array_equal(ours[k], ref[k], err_msg=k)
        assert ours[k].dtype == np.int32
    assert stats.rows == stats.examples == 40


def test_encdec_packed_segments_equal_seqio_unpacked_examples():
    raw = raw_examples(60, seed=1)
    ours, stats = EncDecFeatureConverter(pack=True).convert(with_eos(raw), ENC_DEC_LENGTHS)
    ref = run_seqio(seqio.EncDecFeatureConverter(pack=False), seqio_trimmed(raw, ENC_DEC_LENGTHS),
                    ENC_DEC_LENGTHS)
    ids = segment_example_ids(ours)
    assert sorted(ids.values()) == list(range(60)), "every example exactly once"
    assert stats.rows < 60
    for (r, s), i in ids.items():
        enc = ours["encoder_segment_ids"][r] == s
        dec = ours["decoder_segment_ids"][r] == s
        n_in = int((ref["encoder_input_tokens"][i] != 0).sum())
        n_tg = int(ref["decoder_loss_weights"][i].sum())
        np.testing.assert_array_equal(ours["encoder_input_tokens"][r][enc],
                                      ref["encoder_input_tokens"][i][:n_in])
        for k in ("decoder_target_tokens", "decoder_input_tokens", "decoder_loss_weights"):
            np.testing.assert_array_equal(ours[k][r][dec], ref[k][i][:n_tg], err_msg=k)
        np.testing.assert_array_equal(ours["encoder_positions"][r][enc], np.arange(n_in))
        np.testing.assert_array_equal(ours["decoder_positions"][r][dec], np.arange(n_tg))
        # Segments are contiguous.
        assert np.ptp(np.flatnonzero(enc)) == n_in - 1 and np.ptp(np.flatnonzero(dec)) == n_tg - 1
    # Padding is zero in every feature.
    for side, key in (("encoder", "encoder_input_tokens"), ("decoder", "decoder_target_tokens")):
        pad = ours[f"{side}_segment_ids"] == 0
        np.testing.assert_array_equal(pad, ours[key] == 0)
        for k, v in ours.items():
            if k.startswith(side):
                assert not v[pad].any(), k


def test_encdec_packed_rows_equal_seqio_packing_of_the_same_rows():
    """Each of our rows equals what SeqIO's pack=True makes of that row's examples."""
    raw = raw_examples(24, seed=2)
    ours, _ = EncDecFeatureConverter(pack=True).convert(with_eos(raw), ENC_DEC_LENGTHS)
    trimmed = seqio_trimmed(raw, ENC_DEC_LENGTHS)
    ids = segment_example_ids(ours)
    rows = ours["decoder_target_tokens"].shape[0]
    for r in (0, 1, rows // 2, rows - 1):  # one SeqIO pipeline per row: a few rows suffice
        members = [ids[(r, s)] for s in range(1, 1 + ours["decoder_segment_ids"][r].max())]
        ref = run_seqio(seqio.EncDecFeatureConverter(pack=True), [trimmed[i] for i in members],
                        ENC_DEC_LENGTHS)
        assert ref["decoder_target_tokens"].shape[0] == 1
        for k in ref:
            np.testing.assert_array_equal(ours[k][r], ref[k][0], err_msg=f"row {r}, {k}")


def test_encdec_no_attention_across_examples():
    raw = raw_examples(80, seed=3)
    ours, _ = EncDecFeatureConverter(pack=True).convert(with_eos(raw), ENC_DEC_LENGTHS)
    ids = segment_example_ids(ours)
    for r in range(ours["decoder_target_tokens"].shape[0]):
        enc_seg, dec_seg = ours["encoder_segment_ids"][r], ours["decoder_segment_ids"][r]
        enc_ex = np.array([ids.get((r, int(s)), -1) for s in enc_seg])
        dec_ex = np.array([ids.get((r, int(s)), -1) for s in dec_seg])
        dec_pos = ours["decoder_positions"][r]
        enc_self = (enc_seg[:, None] == enc_seg[None, :]) & (enc_seg[:, None] > 0)
        cross = (dec_seg[:, None] == enc_seg[None, :]) & (dec_seg[:, None] > 0)
        dec_self = ((dec_seg[:, None] == dec_seg[None, :]) & (dec_seg[:, None] > 0)
                    & (dec_pos[:, None] >= dec_pos[None, :]))
        for mask, q, k in ((enc_self, enc_ex, enc_ex), (cross, dec_ex, enc_ex),
                           (dec_self, dec_ex, dec_ex)):
            qi, ki = np.nonzero(mask)
            np.testing.assert_array_equal(q[qi], k[ki])
            # ... and the mask is complete: every same-example pair may attend.
            same = (q[:, None] == k[None, :]) & (q[:, None] >= 0)
            if mask is dec_self:
                same &= dec_pos[:, None] >= dec_pos[None, :]
            np.testing.assert_array_equal(mask, same)


def test_encdec_truncation_counted_and_tokens_counted():
    raw = raw_examples(50, seed=4, max_inputs=60, max_targets=20)
    stats_sum = ConversionStats()
    for half in (raw[:25], raw[25:]):
        _, stats = EncDecFeatureConverter().convert(with_eos(half), ENC_DEC_LENGTHS)
        stats_sum = stats_sum + stats
    expected = {k: sum(len(ex[k]) + 1 > ENC_DEC_LENGTHS[k] for ex in raw)
                for k in ENC_DEC_LENGTHS}
    assert expected["inputs"] > 0 and expected["targets"] > 0
    assert stats_sum.truncated == expected
    assert stats_sum.examples == 50
    trimmed_lengths = {k: sum(min(len(ex[k]) + 1, ENC_DEC_LENGTHS[k]) for ex in raw)
                       for k in ENC_DEC_LENGTHS}
    assert stats_sum.tokens == {"encoder_input_tokens": trimmed_lengths["inputs"],
                                "decoder_target_tokens": trimmed_lengths["targets"]}
    assert stats_sum.slots["encoder_input_tokens"] == stats_sum.rows * 32
    occ = stats_sum.occupancy()
    assert stats_sum.efficiency() == max(occ.values())


def test_encdec_task_ids_and_model_feature_lengths():
    examples = [{"inputs": np.array([5, 6, 1]), "targets": np.array([7, 1]), "task_index": 3},
                {"inputs": np.array([8, 1]), "targets": np.array([9, 9, 1]), "task_index": 0}]
    conv = EncDecFeatureConverter()
    out, stats = conv.convert(examples, {"inputs": 8, "targets": 6})
    assert stats.rows == 1
    # Hand-computed: both fit one row, segments in example order.
    np.testing.assert_array_equal(out["encoder_input_tokens"][0], [5, 6, 1, 8, 1, 0, 0, 0])
    np.testing.assert_array_equal(out["decoder_target_tokens"][0], [7, 1, 9, 9, 1, 0])
    np.testing.assert_array_equal(out["decoder_input_tokens"][0], [0, 7, 0, 9, 9, 0])
    np.testing.assert_array_equal(out["decoder_task_ids"][0], [3, 3, 0, 0, 0, 0])
    np.testing.assert_array_equal(out["decoder_loss_weights"][0], [1, 1, 1, 1, 1, 0])
    lengths = conv.model_feature_lengths({"inputs": 8, "targets": 6}, with_task_ids=True)
    assert set(lengths) == set(out)
    assert all(out[k].shape == (1, v) for k, v in lengths.items())
    ref = seqio.EncDecFeatureConverter(pack=True).get_model_feature_lengths(
        {"inputs": 8, "targets": 6})
    assert conv.model_feature_lengths({"inputs": 8, "targets": 6}) == dict(ref)


def test_empty_window():
    for conv, lengths, width in ((EncDecFeatureConverter(), ENC_DEC_LENGTHS, 12),
                                 (DecoderFeatureConverter(pack=False), PREFIX_LENGTHS, 34)):
        out, stats = conv.convert([], lengths)
        assert set(out) == set(conv.model_feature_lengths(lengths))
        assert out["decoder_target_tokens"].shape == (0, width)
        assert stats.rows == stats.examples == 0 and stats.efficiency() == 0.0


def test_deterministic():
    examples = with_eos(raw_examples(200, seed=5))
    a, _ = EncDecFeatureConverter().convert(examples, ENC_DEC_LENGTHS)
    b, _ = EncDecFeatureConverter().convert([dict(e) for e in examples], ENC_DEC_LENGTHS)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


# --- decoder-only ----------------------------------------------------------------------------
@pytest.mark.parametrize("loss_on_targets_only", [True, False])
def test_prefix_lm_unpacked_equals_seqio_exactly(loss_on_targets_only):
    raw = raw_examples(30, seed=6, max_inputs=30, max_targets=12)
    ours, _ = DecoderFeatureConverter(pack=False, loss_on_targets_only=loss_on_targets_only
                                      ).convert(with_eos(raw, task_ids=False), PREFIX_LENGTHS)
    ref = run_seqio(seqio.DecoderFeatureConverter(pack=False,
                                                  loss_on_targets_only=loss_on_targets_only),
                    seqio_trimmed(raw, PREFIX_LENGTHS), PREFIX_LENGTHS)
    assert set(ours) == set(ref)
    for k in ref:
        np.testing.assert_array_equal(ours[k], ref[k], err_msg=k)
    if not loss_on_targets_only:
        np.testing.assert_array_equal(ours["decoder_loss_weights"],
                                      ours["decoder_target_tokens"] != 0)


@pytest.mark.parametrize("loss_on_targets_only", [True, False])
def test_prefix_lm_packed_segments_equal_seqio(loss_on_targets_only):
    raw = raw_examples(50, seed=7, max_inputs=30, max_targets=12)
    conv = DecoderFeatureConverter(loss_on_targets_only=loss_on_targets_only)
    ours, stats = conv.convert(with_eos(raw), PREFIX_LENGTHS)
    trimmed = seqio_trimmed(raw, PREFIX_LENGTHS)
    ref_conv = seqio.DecoderFeatureConverter(pack=False, loss_on_targets_only=loss_on_targets_only)
    ref = run_seqio(ref_conv, trimmed, PREFIX_LENGTHS)
    ids = segment_example_ids(ours)
    assert sorted(ids.values()) == list(range(50))
    assert stats.rows < 50
    for (r, s), i in ids.items():
        seg = ours["decoder_segment_ids"][r] == s
        n = int((ref["decoder_target_tokens"][i] != 0).sum())
        for k in ("decoder_target_tokens", "decoder_input_tokens", "decoder_loss_weights",
                  "decoder_causal_attention"):
            np.testing.assert_array_equal(ours[k][r][seg], ref[k][i][:n], err_msg=k)
        np.testing.assert_array_equal(ours["decoder_positions"][r][seg], np.arange(n))
    # Whole rows against SeqIO's own packing of the same examples (a few rows suffice).
    pack_conv = seqio.DecoderFeatureConverter(pack=True, loss_on_targets_only=loss_on_targets_only)
    for r in range(3):
        members = [ids[(r, s)] for s in range(1, 1 + ours["decoder_segment_ids"][r].max())]
        ref_row = run_seqio(pack_conv, [trimmed[i] for i in members], PREFIX_LENGTHS)
        assert ref_row["decoder_target_tokens"].shape[0] == 1
        for k in ref_row:
            np.testing.assert_array_equal(ours[k][r], ref_row[k][0], err_msg=f"row {r}, {k}")


def test_lm_targets_only_equals_seqio():
    raw = raw_examples(30, seed=8, max_targets=25, with_inputs=False)
    lengths = {"targets": 20}
    for pack in (False, True):
        ours, stats = DecoderFeatureConverter(pack=pack).convert(with_eos(raw, task_ids=pack),
                                                                 lengths)
        assert "decoder_causal_attention" not in ours
        trimmed = seqio_trimmed(raw, lengths)
        ref = run_seqio(seqio.DecoderFeatureConverter(pack=False), trimmed, lengths)
        if not pack:
            for k in ref:
                np.testing.assert_array_equal(ours[k], ref[k], err_msg=k)
            continue
        for (r, s), i in segment_example_ids(ours).items():
            seg = ours["decoder_segment_ids"][r] == s
            n = len(trimmed[i]["targets"])
            for k in ("decoder_target_tokens", "decoder_input_tokens", "decoder_loss_weights"):
                np.testing.assert_array_equal(ours[k][r][seg], ref[k][i][:n], err_msg=k)
    assert stats.truncated == {"targets": sum(len(ex["targets"]) + 1 > 20 for ex in raw)}


def test_prefix_lm_example_without_inputs_is_plain_lm():
    examples = [{"targets": np.array([4, 5, 1])}, {"inputs": np.array([7, 1]),
                                                   "targets": np.array([8, 1])}]
    out, _ = DecoderFeatureConverter().convert(examples, {"inputs": 4, "targets": 4})
    # Hand-computed; segments in example order in the single row of length 8.
    np.testing.assert_array_equal(out["decoder_target_tokens"][0], [4, 5, 1, 7, 1, 8, 1, 0])
    np.testing.assert_array_equal(out["decoder_input_tokens"][0], [0, 4, 5, 0, 7, 1, 8, 0])
    np.testing.assert_array_equal(out["decoder_loss_weights"][0], [1, 1, 1, 0, 0, 1, 1, 0])
    np.testing.assert_array_equal(out["decoder_causal_attention"][0], [1, 0, 0, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(out["decoder_segment_ids"][0], [1, 1, 1, 2, 2, 2, 2, 0])


def test_decoder_model_feature_lengths_match_seqio():
    for lengths in ({"inputs": 24, "targets": 10}, {"targets": 16}):
        for pack in (False, True):
            ref = seqio.DecoderFeatureConverter(pack=pack).get_model_feature_lengths(lengths)
            assert DecoderFeatureConverter(pack=pack).model_feature_lengths(lengths) == dict(ref)


def test_decoder_no_attention_across_examples():
    raw = raw_examples(60, seed=9)
    ours, _ = DecoderFeatureConverter().convert(with_eos(raw), PREFIX_LENGTHS)
    seg, pos = ours["decoder_segment_ids"], ours["decoder_positions"]
    prefix = ours["decoder_causal_attention"]
    ex = ours["decoder_task_ids"] - 1  # example index, -1 on padding
    for r in range(seg.shape[0]):
        s, p, b, e = seg[r], pos[r], prefix[r], ex[r]
        visible = (p[:, None] >= p[None, :]) | (b[None, :] == 1)  # causal or bidirectional prefix
        mask = (s[:, None] == s[None, :]) & (s[:, None] > 0) & visible
        qi, ki = np.nonzero(mask)
        np.testing.assert_array_equal(e[qi], e[ki])


# --- errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize("examples, lengths, match", [
    ([{"inputs": np.array([3, 0, 1]), "targets": np.array([4, 1])}], ENC_DEC_LENGTHS,
     "example 0: 'inputs' contains token id 0"),
    ([{"inputs": np.array([3, 1])}], ENC_DEC_LENGTHS, "example 0 has no 'targets'"),
    ([{"inputs": np.array([3, 1]), "targets": np.array([], np.int32)}], ENC_DEC_LENGTHS,
     "'targets' is empty"),
    ([{"inputs": np.array([3, 1]), "targets": np.array([2.5, 1.0])}], ENC_DEC_LENGTHS,
     "integer token ids"),
    ([{"inputs": np.array([3, 1]), "targets": np.array([4, 1])}], {"inputs": 8},
     "missing: \\['targets'\\]"),
    ([{"inputs": np.array([3, 1]), "targets": np.array([4, 1]), "task_index": 0},
      {"inputs": np.array([3, 1]), "targets": np.array([4, 1])}], ENC_DEC_LENGTHS,
     "example 1: 'task_index' is present in some"),
    ([{"inputs": np.array([3, 1]), "targets": np.array([4, 1])}], {"inputs": 0, "targets": 4},
     "must be a positive int"),
])
def test_encdec_bad_input(examples, lengths, match):
    with pytest.raises(DataError, match=match):
        EncDecFeatureConverter().convert(examples, lengths)


def test_decoder_refuses_to_drop_inputs():
    with pytest.raises(DataError, match="would be dropped"):
        DecoderFeatureConverter().convert(
            [{"inputs": np.array([3, 1]), "targets": np.array([4, 1])}], {"targets": 8})
