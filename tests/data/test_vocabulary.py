"""SentencePiece vocabularies: training with T5 ids, the configured default, bad files."""

from __future__ import annotations

import pytest
import sentencepiece as spm

from flantune.data import DataError, set_vocabulary, train_vocabulary
from flantune.data.vocabulary import (
    DEFAULT_VOCABULARY,
    check_vocabulary_file,
    demo_vocabulary_path,
)

TEXTS = [f"Question {i}: what is {i} plus {i * 3}?\nAnswer: {i * 4}." for i in range(3000)] + [
    "The quick brown fox jumps over the lazy dog.", "Reverse the word lantern: nretnal."] * 50


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> str:
    return train_vocabulary(TEXTS, tmp_path_factory.mktemp("vocab") / "spm", vocab_size=400)


def test_trained_vocabulary_has_t5_ids_and_keeps_newlines(trained):
    processor = spm.SentencePieceProcessor(model_file=trained)
    assert (processor.pad_id(), processor.eos_id(), processor.unk_id(), processor.bos_id()) == (
        0, 1, 2, -1)
    text = "Line one\nLine  two\n\n  indented"
    assert processor.decode(processor.encode(text)) == text
    # Byte fallback: characters never seen in training still round-trip, with no unk.
    unseen = "naïve 你好 🙂"
    ids = processor.encode(unseen)
    assert 2 not in ids and processor.decode(ids) == unseen


def test_configured_vocabulary_follows_set_vocabulary(trained):
    try:
        set_vocabulary(trained)
        assert DEFAULT_VOCABULARY.vocab_size == 400
        set_vocabulary(trained, extra_ids=100)  # T5-style sentinel ids appended
        assert DEFAULT_VOCABULARY.vocab_size == 500
        assert DEFAULT_VOCABULARY.decode(DEFAULT_VOCABULARY.encode("what is 3")) == "what is 3"
    finally:
        set_vocabulary(None)
    assert DEFAULT_VOCABULARY.sentencepiece_model_file == demo_vocabulary_path()
    assert DEFAULT_VOCABULARY.eos_id == 1


def test_shipped_demo_vocabulary_is_valid():
    check_vocabulary_file(demo_vocabulary_path())


def test_bad_vocabulary_files(tmp_path):
    with pytest.raises(DataError, match="does not exist.*flantune.vocabulary.path="):
        set_vocabulary(tmp_path / "missing.model")
    with pytest.raises(DataError, match=r"is a directory, not a file.*flantune.vocabulary.path="):
        set_vocabulary(tmp_path)
    garbage = tmp_path / "garbage.model"
    garbage.write_bytes(b"\x00\x01 not a model")
    with pytest.raises(DataError, match="not a SentencePiece model"):
        set_vocabulary(garbage)
    prefix = str(tmp_path / "wrong_ids")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(TEXTS[:500]))
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=prefix, vocab_size=200,
                                   minloglevel=2)  # default ids: unk 0, bos 1, eos 2
    with pytest.raises(DataError, match="pad 0 and eos 1"):
        set_vocabulary(prefix + ".model")
    with pytest.raises(DataError, match="no text"):
        train_vocabulary([], tmp_path / "empty")
    with pytest.raises(DataError, match="could not train a 100000-piece"):
        train_vocabulary(TEXTS[:100], tmp_path / "too_big", vocab_size=100_000)


def test_a_third_party_t5_style_model_drives_the_whole_pipeline():
    """SeqIO's own test model (T5 ids, made by SeqIO's authors) with T5's 100 extra ids."""
    import os

    import seqio

    import tests.task_fixtures  # noqa: F401
    from flantune.data.stream import task_examples

    path = os.path.join(os.path.dirname(seqio.__file__), "test_data", "sentencepiece",
                        "sentencepiece.model")
    reference = seqio.SentencePieceVocabulary(path, extra_ids=100)
    try:
        set_vocabulary(path, extra_ids=100)
        assert DEFAULT_VOCABULARY.vocab_size == reference.vocab_size == 126
        reader = task_examples("test_reverse_zsnoopt", "train", seed=0)
        examples = reader.get_many(range(20))
        task = seqio.TaskRegistry.get("test_reverse_zsnoopt")
        via_seqio = {ex["targets_pretokenized"].decode(): ex for ex in task.get_dataset(
            sequence_length=None, split="train", shuffle=False).as_numpy_iterator()}
        for k, example in enumerate(examples):
            text = reader.rendered(k)
            for feature in ("inputs", "targets"):
                expected = reference.encode(text[feature]) + [1]
                assert example[feature].tolist() == expected
            assert via_seqio[text["targets"]]["targets"].tolist() == example["targets"].tolist()
    finally:
        set_vocabulary(None)
