"""HfTokenizerVocabulary: encode/decode identical to transformers' fast tokenizer for the three
kinds (byte-level BPE, SentencePiece-style BPE, converted SentencePiece), ids from the config,
the TF path, selection by set_vocabulary, and the errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from flantune.data import DataError, set_vocabulary
from flantune.data.hf_vocabulary import HfTokenizerVocabulary
from flantune.data.vocabulary import DEFAULT_VOCABULARY, encode_batch
from flantune.models.convert.tokenizer import PROBE_TEXTS
from tests.data.chat.tokenizers import TEXTS, converted, trained

SAMPLES = [*PROBE_TEXTS, *TEXTS[::97], "Don't   stop , ok ? yes !", "é ü 你好 🙂 \t tab",
           "<s>[INST] hi [/INST] there </s>", "<|im_start|>user\nhi<|im_end|>\n"]


@pytest.fixture(scope="module", params=["byte_level", "bpe", "converted", "shipped"])
def tokenizer_dir(request, tmp_path_factory) -> str:
    """Trained here (byte-level and SentencePiece-style BPE), converted from the demo's
    SentencePiece model, and the shipped chat tokenizer (byte-level BPE on the demo's text)."""
    if request.param == "shipped":
        from flantune.data.vocabulary import demo_chat_tokenizer_path

        return demo_chat_tokenizer_path()
    directory = tmp_path_factory.mktemp(request.param)
    return converted(directory) if request.param == "converted" else trained(directory,
                                                                             request.param)


def test_encode_and_decode_match_transformers(tokenizer_dir):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    vocabulary = HfTokenizerVocabulary(tokenizer_dir)
    reference = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    assert isinstance(reference, PreTrainedTokenizerFast)
    for text in SAMPLES:
        ids = list(vocabulary.encode(text))
        assert ids == reference(text, add_special_tokens=False)["input_ids"], text
        assert vocabulary._decode(ids) == reference.decode(ids, skip_special_tokens=True)
    batched = encode_batch(vocabulary, SAMPLES)
    assert batched == reference(SAMPLES, add_special_tokens=False)["input_ids"]
    assert vocabulary.vocab_size == len(reference)
    assert vocabulary.eos_id == reference.eos_token_id
    assert vocabulary.bos_id == reference.bos_token_id
    assert vocabulary.pad_id == reference.pad_token_id == 0


def test_decode_stops_after_the_first_eos_as_seqio(tokenizer_dir):
    vocabulary = HfTokenizerVocabulary(tokenizer_dir)
    first, second = vocabulary.encode("first part"), vocabulary.encode("second part")
    assert vocabulary.decode([*first, vocabulary.eos_id, *second]) == vocabulary.decode(first)


def test_tf_encode_and_decode_match_python(tokenizer_dir):
    vocabulary = HfTokenizerVocabulary(tokenizer_dir)
    for text in SAMPLES[:8]:
        ids = vocabulary.encode_tf(tf.constant(text)).numpy().tolist()
        assert ids == list(vocabulary.encode(text))
        if ids:
            decoded = vocabulary.decode_tf(tf.constant(ids, tf.int32)).numpy().decode()
            assert decoded == vocabulary.decode(ids)


def test_set_vocabulary_selects_a_tokenizer_for_every_task(tokenizer_dir):
    import seqio

    import tests.task_fixtures  # noqa: F401
    from flantune.data.stream import task_examples

    reference = HfTokenizerVocabulary(tokenizer_dir)
    try:
        set_vocabulary(tokenizer_dir)
        assert DEFAULT_VOCABULARY.vocab_size == reference.vocab_size
        assert DEFAULT_VOCABULARY.eos_id == reference.eos_id
        examples = task_examples("test_reverse_zsnoopt", "train", seed=0).get_many(range(10))
        task = seqio.TaskRegistry.get("test_reverse_zsnoopt")
        via_seqio = {ex["targets_pretokenized"].decode(): ex for ex in task.get_dataset(
            sequence_length=None, split="train", shuffle=False).as_numpy_iterator()}
        for example in examples:  # flantune's stream tokenizes as SeqIO's own pipeline
            target = reference.decode(example["targets"].tolist())
            np.testing.assert_array_equal(example["targets"], via_seqio[target]["targets"])
            assert example["targets"][-1] == reference.eos_id
    finally:
        set_vocabulary(None)


def test_model_vocab_size_is_checked_against_the_tokenizer(tokenizer_dir):
    from flantune.models.config import DecoderConfig
    from flantune.train.loop import TrainConfig, TrainError, _check_vocabulary

    size = HfTokenizerVocabulary(tokenizer_dir).vocab_size
    try:
        set_vocabulary(tokenizer_dir)
        small = DecoderConfig(vocab_size=size - 1, emb_dim=8, num_heads=1, num_kv_heads=1,
                              head_dim=8, mlp_dim=8, num_layers=1)
        config = TrainConfig(model_dir="unused", mixture_or_task_name="x",
                             task_feature_lengths={"targets": 8}, train_steps=1, batch_size=1,
                             model=small)
        with pytest.raises(TrainError, match=f"smaller than the vocabulary's {size} ids"):
            _check_vocabulary(config)
    finally:
        set_vocabulary(None)


def test_bad_tokenizers_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        HfTokenizerVocabulary(tmp_path / "missing" / "tokenizer.json")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "tokenizer.json").write_text("{not json")
    with pytest.raises(DataError, match="is not a Hugging Face tokenizer.json"):
        set_vocabulary(tmp_path / "bad" / "tokenizer.json")
    with pytest.raises(DataError, match="extra_ids=3 applies to SentencePiece models only"):
        set_vocabulary(trained(tmp_path / "ok", "bpe"), extra_ids=3)
    config = tmp_path / "ok" / "tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "eos_token": "<nope>"}))
    with pytest.raises(DataError, match="its eos_token '<nope>' is not a token"):
        HfTokenizerVocabulary(tmp_path / "ok")


def test_a_tokenizer_whose_id_0_is_text_is_refused(tmp_path):
    from flantune.data.hf_tokenizer_training import train_hf_tokenizer

    # Byte-level BPE with its special tokens last: id 0 is a byte ('!'), as in GPT-2/Llama-3.
    path = train_hf_tokenizer(TEXTS, tmp_path, vocab_size=400, special_tokens=("</s>",),
                              bos_token=None)
    data = json.loads((tmp_path / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    pad = [t for t in data["added_tokens"] if t["content"] == "<pad>"][0]
    first = next(token for token, i in vocab.items() if i == len(data["added_tokens"]))
    vocab[first], vocab["<pad>"] = 0, vocab.pop("<pad>", None)  # swap ids 0 and that byte's
    vocab["<pad>"] = pad["id"] = len(data["added_tokens"])
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=f"id 0 is the ordinary token '{first}'"):
        HfTokenizerVocabulary(path)


def test_a_tokenizer_whose_id_0_is_its_eos_is_refused(tmp_path):
    from flantune.data.hf_tokenizer_training import train_hf_tokenizer

    path = train_hf_tokenizer(TEXTS, tmp_path, vocab_size=400)
    config = tmp_path / "tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "eos_token": "<pad>"}))
    with pytest.raises(DataError, match="id 0 is its EOS token '<pad>'"):
        HfTokenizerVocabulary(path)


def test_batched_tf_decode_gives_one_string_per_row(tmp_path):
    vocabulary = HfTokenizerVocabulary(trained(tmp_path, "byte_level"))
    rows = [list(vocabulary.encode("hello world")), list(vocabulary.encode("good bye"))]
    width = max(map(len, rows))
    ids = tf.constant([r + [0] * (width - len(r)) for r in rows], tf.int32)
    assert [t.decode() for t in vocabulary.decode_tf(ids).numpy()] == ["hello world",
                                                                      "good bye"]
