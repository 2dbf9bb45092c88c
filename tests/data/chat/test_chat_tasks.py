"""Chat tasks end to end in the data layer: examples in the causal-LM convention, packing that
keeps conversations whole with their masks, truncation on turn boundaries, and the errors (an
all-masked conversation, a prompt longer than the sequence, an encoder-decoder model)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flantune.data import BatchIterator, DataError, JsonlSource, RecordError
from flantune.data.chat import ChatTemplate, chat_task, encode_conversation
from flantune.data.feature_converters import DecoderFeatureConverter, EncDecFeatureConverter
from flantune.data.hf_vocabulary import HfTokenizerVocabulary
from flantune.data.stream import task_examples
from tests.data.chat.conversations_fixture import random_conversations
from tests.data.chat.tokenizers import trained


@pytest.fixture(scope="module")
def vocabulary(tmp_path_factory) -> HfTokenizerVocabulary:
    return HfTokenizerVocabulary(trained(tmp_path_factory.mktemp("tok"), "byte_level"))


@pytest.fixture(scope="module")
def conversations_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("chat") / "conversations.jsonl"
    with open(path, "w") as f:
        for messages in random_conversations(60, seed=3):
            f.write(json.dumps({"messages": messages}) + "\n")
    return path


@pytest.fixture(scope="module")
def chatml_task(vocabulary, conversations_file):
    @chat_task("test_chat_chatml", template="chatml", vocabulary=vocabulary, splits=("train",))
    def records(split):
        return JsonlSource(conversations_file, format="messages", task="test_chat_chatml")

    return records


def test_examples_follow_the_causal_lm_convention(chatml_task, vocabulary):
    reader = task_examples("test_chat_chatml", "train", seed=0)
    for k in range(10):
        example = reader.get_many([k])[0]
        index = reader._record_index(k)[0]
        encoded = encode_conversation(chatml_task.chat_template(), vocabulary,
                                      chatml_task.messages("train", index))
        np.testing.assert_array_equal(example["targets"], encoded.tokens[1:])
        np.testing.assert_array_equal(example["loss_weights"], encoded.loss_mask[1:])
        assert example["decoder_start"] == encoded.tokens[0]
        assert list(example["turn_ends"]) == [end - 1 for _, end in encoded.turns]


def _segments(row: dict[str, np.ndarray], r: int):
    seg = row["decoder_segment_ids"][r]
    for s in range(1, seg.max() + 1):
        where = np.flatnonzero(seg == s)
        yield {k: row[k][r, where] for k in ("decoder_target_tokens", "decoder_input_tokens",
                                              "decoder_loss_weights", "decoder_positions")}


@pytest.mark.parametrize("pack", [True, False])
def test_packing_keeps_conversations_whole_with_their_masks(chatml_task, pack):
    examples = task_examples("test_chat_chatml", "train", seed=0).get_many(range(40))
    rows, stats = DecoderFeatureConverter(pack=pack).convert(examples, {"targets": 512})
    assert stats.examples == 40 and not stats.truncated.get("conversations")
    if not pack:
        rows = {**rows, "decoder_segment_ids": (rows["decoder_target_tokens"] > 0).astype(int),
                "decoder_positions": np.tile(np.arange(512), (len(examples), 1))}
    found = [seg for r in range(len(rows["decoder_target_tokens"])) for seg in _segments(rows, r)]
    assert len(found) == len(examples)
    unmatched = dict(enumerate(examples))
    for seg in found:  # each segment is exactly one conversation: tokens, start, mask
        key = next(i for i, ex in unmatched.items()
                   if np.array_equal(ex["targets"], seg["decoder_target_tokens"]))
        match = unmatched.pop(key)
        np.testing.assert_array_equal(seg["decoder_loss_weights"], match["loss_weights"])
        assert seg["decoder_input_tokens"][0] == match["decoder_start"]
        np.testing.assert_array_equal(seg["decoder_input_tokens"][1:], match["targets"][:-1])
        np.testing.assert_array_equal(seg["decoder_positions"], np.arange(match["targets"].size))
    assert not unmatched


def _example(n: int, trained_ranges, ends, start: int = 7):
    weights = np.zeros(n, np.int32)
    for a, b in trained_ranges:
        weights[a:b] = 1
    return {"targets": np.arange(10, 10 + n, dtype=np.int32), "loss_weights": weights,
            "decoder_start": start, "turn_ends": np.asarray(ends), "record": "file.jsonl:3"}


def test_over_long_conversations_are_cut_on_turn_boundaries_and_counted():
    example = _example(25, [(3, 5), (9, 12), (16, 20)], [5, 12, 20])
    rows, stats = DecoderFeatureConverter(pack=True).convert([example], {"targets": 15})
    assert stats.truncated == {"targets": 0, "conversations": 1, "turns": 1}
    np.testing.assert_array_equal(rows["decoder_target_tokens"][0, :12], np.arange(10, 22))
    assert rows["decoder_target_tokens"][0, 12:].sum() == 0
    np.testing.assert_array_equal(rows["decoder_loss_weights"][0, :12],
                                  example["loss_weights"][:12])


def test_a_first_turn_longer_than_the_sequence_keeps_its_end_token():
    example = _example(25, [(3, 12), (16, 20)], [12, 20])
    rows, stats = DecoderFeatureConverter(pack=True).convert([example], {"targets": 6})
    assert stats.truncated == {"targets": 0, "conversations": 1, "inside_turn": 1, "turns": 1}
    np.testing.assert_array_equal(rows["decoder_target_tokens"][0],
                                  [10, 11, 12, 13, 14, 10 + 11])
    np.testing.assert_array_equal(rows["decoder_loss_weights"][0], [0, 0, 0, 1, 1, 1])


def test_a_conversation_whose_prompt_fills_the_sequence_is_left_out_and_counted():
    long, short = _example(25, [(12, 15)], [15]), _example(6, [(2, 6)], [6])
    rows, stats = DecoderFeatureConverter(pack=True).convert([long, short], {"targets": 8})
    assert stats.examples == 2 and stats.truncated["dropped"] == 1
    assert rows["decoder_target_tokens"].shape == (1, 8)
    np.testing.assert_array_equal(rows["decoder_target_tokens"][0, :6], short["targets"])
    assert "1 conversation(s) left out" in stats.truncation_summary()


def test_a_cut_inside_a_turn_keeps_the_end_of_turn_token_of_a_hub_template(vocabulary):
    """A template without generation blocks: its turns run to the newline after <|im_end|>;
    a cut inside one keeps <|im_end|> (turn_stops), not that newline."""
    from tests.data.chat import official_templates as official

    template = ChatTemplate("chatml_hub", official.CHATML)
    long_answer = " ".join(["words"] * 40)

    @chat_task("test_chat_hub_cut", template=template, vocabulary=vocabulary, splits=("train",))
    def records(split):
        return [{"messages": [{"role": "user", "content": "Say words."},
                              {"role": "assistant", "content": long_answer}]}]

    example = records.example("train", 0)
    stop = vocabulary.token_id("<|im_end|>")
    assert records.end_of_turn_id() == stop  # inferred: the template names none
    assert example["targets"][example["turn_stops"][0]] == stop
    assert example["targets"][example["turn_ends"][0] - 1] != stop  # the newline after it
    rows, stats = DecoderFeatureConverter(pack=True).convert([example], {"targets": 48})
    assert stats.truncated["inside_turn"] == 1
    assert rows["decoder_target_tokens"][0, -1] == stop
    assert rows["decoder_loss_weights"][0, -1] == 1


def test_conversations_mix_with_prefix_lm_examples():
    chat = _example(10, [(4, 10)], [10])
    flan = {"inputs": np.asarray([5, 6, 1], np.int32), "targets": np.asarray([8, 1], np.int32)}
    rows, _ = DecoderFeatureConverter(pack=False).convert([chat, flan],
                                                          {"inputs": 4, "targets": 8})
    np.testing.assert_array_equal(rows["decoder_loss_weights"][0, :10], chat["loss_weights"])
    np.testing.assert_array_equal(rows["decoder_loss_weights"][1, :5], [0, 0, 0, 1, 1])
    assert rows["decoder_input_tokens"][0, 0] == 7 and rows["decoder_input_tokens"][1, 0] == 0


def test_encoder_decoder_models_refuse_conversations():
    with pytest.raises(DataError, match="conversations train decoder-only models"):
        EncDecFeatureConverter().convert([_example(5, [(1, 5)], [5])],
                                         {"inputs": 8, "targets": 8})


def test_a_conversation_with_nothing_to_train_is_an_error(vocabulary, conversations_file):
    users_only = ChatTemplate("users_only", "{% for m in messages %}{% if m['role'] == 'user' %}"
                                            "{{ m['content'] + '\\n' }}{% endif %}{% endfor %}")

    @chat_task("test_chat_nothing", template=users_only, vocabulary=vocabulary,
               splits=("train",))
    def records(split):
        return JsonlSource(conversations_file, format="messages", task="test_chat_nothing")

    with pytest.raises(RecordError, match=r"test_chat_nothing.*conversations.jsonl:\d+.*no token "
                                          r"to train on with loss='assistant_only'"):
        task_examples("test_chat_nothing", "train", seed=0).get_many([0])


def test_batches_and_seqio_dataset(chatml_task):
    import seqio

    batches = BatchIterator("test_chat_chatml", task_feature_lengths={"targets": 256},
                            batch_size=4, converter="decoder", window=64)
    batch = next(batches)
    assert batch["decoder_loss_weights"].sum() > 0
    assert set(np.unique(batch["decoder_loss_weights"])) <= {0, 1}
    dataset = seqio.get_mixture_or_task("test_chat_chatml").get_dataset(
        sequence_length=None, split="train", shuffle=False)
    first = next(dataset.as_numpy_iterator())
    encoded = chatml_task.encode("train", 0)
    np.testing.assert_array_equal(first["targets"], encoded.tokens)
    np.testing.assert_array_equal(first["loss_weights"], encoded.loss_mask)


def test_the_configured_loss_applies_to_tasks_that_name_none(vocabulary, conversations_file):
    from flantune.data.chat import set_chat_loss

    @chat_task("test_chat_configured_loss", template="chatml", vocabulary=vocabulary,
               splits=("train",))
    def records(split):
        return JsonlSource(conversations_file, format="messages")

    multi = next(i for i in range(60) if len(records.encode("train", i).turns) > 1)
    try:
        set_chat_loss("last_turn")
        encoded = records.encode("train", multi)
        start, end = encoded.turns[-1]
        assert set(np.flatnonzero(encoded.loss_mask)) == set(range(start, end))
    finally:
        set_chat_loss("assistant_only")
    assert records.encode("train", multi).loss_mask.sum() > end - start
    with pytest.raises(DataError, match="Unknown chat loss 'some'"):
        set_chat_loss("some")


def test_a_turn_that_fits_up_to_its_end_of_turn_token_is_cut_right_after_it():
    example = {**_example(12, [(3, 10)], [10]), "turn_stops": np.asarray([7])}
    rows, stats = DecoderFeatureConverter(pack=True).convert([example], {"targets": 9})
    assert stats.truncated["inside_turn"] == 1
    np.testing.assert_array_equal(rows["decoder_target_tokens"][0, :8], np.arange(10, 18))
    assert rows["decoder_target_tokens"][0, 8] == 0
