"""Pair rows: a pair's chosen and rejected sequences side by side (segments 2k-1 and 2k), the
causal-LM convention, the loss on completions, packing, cutting and the errors."""

from __future__ import annotations

import numpy as np
import pytest

from flantune.data import DataError
from flantune.data.preference import PreferenceFeatureConverter, pair_budget


def pair(prompt, chosen, rejected, task=None):
    example = {"chosen": np.asarray(prompt + chosen), "rejected": np.asarray(prompt + rejected),
               "prompt_length": len(prompt)}
    if task is not None:
        example["task_index"] = task
    return example


def test_one_pair_row_by_hand():
    rows, stats = PreferenceFeatureConverter(pack=False).convert(
        [pair([5, 6], [7, 8], [9])], {"targets": 8})
    assert rows["decoder_input_tokens"].tolist() == [[5, 6, 7, 5, 6, 0, 0, 0]]
    assert rows["decoder_target_tokens"].tolist() == [[6, 7, 8, 6, 9, 0, 0, 0]]
    assert rows["decoder_loss_weights"].tolist() == [[0, 1, 1, 0, 1, 0, 0, 0]]
    assert rows["decoder_segment_ids"].tolist() == [[1, 1, 1, 2, 2, 0, 0, 0]]
    assert rows["decoder_positions"].tolist() == [[0, 1, 2, 0, 1, 0, 0, 0]]
    assert stats.rows == 1 and stats.tokens["decoder_target_tokens"] == 5


def test_packed_pairs_keep_chosen_and_rejected_adjacent():
    rng = np.random.default_rng(0)
    examples = [pair(*(list(rng.integers(2, 50, rng.integers(1, 6))) for _ in range(3)),
                     task=i % 3) for i in range(40)]
    rows, stats = PreferenceFeatureConverter(pack=True).convert(examples, {"targets": 32})
    assert stats.rows < 40
    seen = []
    for r in range(stats.rows):
        segments = rows["decoder_segment_ids"][r]
        assert segments.max() % 2 == 0  # whole pairs only
        for k in range(1, segments.max() // 2 + 1):
            chosen, rejected = segments == 2 * k - 1, segments == 2 * k
            c_in = rows["decoder_input_tokens"][r][chosen]
            r_in = rows["decoder_input_tokens"][r][rejected]
            c_out = rows["decoder_target_tokens"][r][chosen]
            r_out = rows["decoder_target_tokens"][r][rejected]
            sequence_c, sequence_r = np.r_[c_in[0], c_out], np.r_[r_in[0], r_out]
            match = [i for i, e in enumerate(examples) if np.array_equal(e["chosen"], sequence_c)
                     and np.array_equal(e["rejected"], sequence_r) and i not in seen]
            assert match, "a pair's sequences must come from one example"
            i = match[0]
            seen.append(i)
            p = examples[i]["prompt_length"]
            for weights, size in ((rows["decoder_loss_weights"][r][chosen], sequence_c.size),
                                  (rows["decoder_loss_weights"][r][rejected], sequence_r.size)):
                assert weights.tolist() == [int(t + 1 >= p) for t in range(size - 1)]
            assert set(rows["decoder_task_ids"][r][chosen | rejected]) == {i % 3}
    assert sorted(seen) == list(range(40))


@pytest.mark.parametrize("chosen, rejected, length, expected", [
    (3, 4, 10, (3, 4)), (3, 9, 10, (3, 7)), (9, 2, 10, (8, 2)), (8, 9, 10, (5, 5)),
    (7, 7, 11, (5, 6)),
])
def test_pair_budget_by_hand(chosen, rejected, length, expected):
    assert pair_budget(chosen, rejected, length) == expected


def test_long_pairs_are_cut_and_hopeless_ones_left_out_and_counted():
    converter = PreferenceFeatureConverter(pack=False)
    long = pair([5, 6], list(range(10, 20)), [7, 8])  # 11 + 3 targets > 8
    hopeless = pair(list(range(10, 17)), [30], [31])  # prompt of 7 leaves nothing in 4 + 4
    rows, stats = converter.convert([long, hopeless], {"targets": 8})
    assert stats.rows == 1 and stats.truncated == {"pairs": 1, "dropped_pairs": 1}
    assert rows["decoder_segment_ids"].tolist() == [[1, 1, 1, 1, 1, 2, 2, 2]]
    assert rows["decoder_target_tokens"][0, :5].tolist() == [6, 10, 11, 12, 13]
    assert "1 preference pair(s) left out" in stats.truncation_summary()


@pytest.mark.parametrize("example, message", [
    ({"targets": np.asarray([3, 4])}, "not a preference pair"),
    ({**pair([3], [4], [5]), "prompt_length": 2}, "prompt_length"),
    (pair([3], [0], [5]), "token id 0"),
])
def test_bad_examples_are_refused(example, message):
    with pytest.raises(DataError, match=message):
        PreferenceFeatureConverter().convert([example], {"targets": 16})


def test_inputs_lengths_are_refused():
    with pytest.raises(DataError, match="no separate inputs"):
        PreferenceFeatureConverter().convert([pair([3], [4], [5])],
                                             {"inputs": 8, "targets": 8})


def test_a_window_whose_pairs_are_all_left_out_is_an_error_not_a_hang(tmp_path):
    import json

    from flantune.data import BatchIterator, JsonlSource
    from flantune.data.preference import preference_task
    from flantune.data.vocabulary import DEFAULT_VOCABULARY

    path = tmp_path / "long.jsonl"
    path.write_text("".join(json.dumps({"prompt": "a long prompt " * 20, "chosen": " x",
                                        "rejected": " y"}) + "\n" for _ in range(4)))

    @preference_task("test_pref_hopeless", splits=("train",), vocabulary=DEFAULT_VOCABULARY)
    def records(split):
        return JsonlSource(path, format="preference", task="test_pref_hopeless")

    batches = BatchIterator("test_pref_hopeless", task_feature_lengths={"targets": 16},
                            batch_size=2, converter=PreferenceFeatureConverter(), window=8)
    with pytest.raises(DataError, match="gave no rows.*left out"):
        next(batches)
