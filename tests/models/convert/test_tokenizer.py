"""The exported Hugging Face tokenizer encodes as flantune's SentencePiece vocabulary (seqio's)
does, on the demo's validation prompts, or is not written."""

from __future__ import annotations

import pytest
import seqio

import flantune.tasks.demo as demo
from flantune.data.tasks import flan_task_for
from flantune.data.vocabulary import demo_vocabulary_path, train_vocabulary
from flantune.models.convert import CheckpointError
from flantune.models.convert.tokenizer import check_tokenizer, save_tokenizer

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def demo_texts() -> list[str]:
    """Inputs and targets of the demo's validation split: every task, zero- and few-shot."""
    texts = []
    for name in [*demo.TRAIN_SIZES, *demo.HELDOUT]:
        task, _ = flan_task_for(f"rg_{name}")
        for variant in task.variants:
            for index in range(4):
                rendered = task.render("validation", index, variant)
                texts += [rendered["inputs"], rendered["targets"]]
    assert sum("\n" in t for t in texts) > 50  # few-shot prompts are newline-separated
    return texts


def _load(directory):
    return transformers.AutoTokenizer.from_pretrained(str(directory), local_files_only=True)


@pytest.mark.parametrize("extra_ids", [0, 100])
def test_t5_tokenizer_encodes_the_demo_prompts_as_flantune(tmp_path, demo_texts, extra_ids):
    save_tokenizer(demo_vocabulary_path(), tmp_path, extra_ids=extra_ids)
    tokenizer = _load(tmp_path)
    vocabulary = seqio.SentencePieceVocabulary(demo_vocabulary_path(), extra_ids=extra_ids)
    assert len(tokenizer) == vocabulary.vocab_size
    texts = [*demo_texts, "span <extra_id_0> and <extra_id_99> end"]
    for text in texts:
        # flantune's features: the vocabulary's ids, then EOS (1).
        assert tokenizer(text)["input_ids"] == [*vocabulary.encode(text), 1], text
    assert tokenizer.pad_token_id == 0 and tokenizer.eos_token_id == 1
    if extra_ids:
        assert tokenizer.convert_tokens_to_ids("▁<extra_id_0>") == vocabulary.vocab_size - 1


def test_decoder_tokenizer_starts_with_flantune_bos_and_pads_left(tmp_path, demo_texts):
    save_tokenizer(demo_vocabulary_path(), tmp_path, add_bos=True, add_eos=True)
    tokenizer = _load(tmp_path)
    vocabulary = seqio.SentencePieceVocabulary(demo_vocabulary_path())
    prompt = demo_texts[1]  # a few-shot prompt
    assert tokenizer(prompt)["input_ids"] == [0, *vocabulary.encode(prompt), 1]
    batch = tokenizer(["a", "a longer prompt"], padding=True)
    assert batch["attention_mask"][0][0] == 0 and batch["attention_mask"][1][0] == 1


def test_causal_decoder_tokenizer_adds_no_eos(tmp_path):
    save_tokenizer(demo_vocabulary_path(), tmp_path, add_bos=True, add_eos=False)
    vocabulary = seqio.SentencePieceVocabulary(demo_vocabulary_path())
    assert _load(tmp_path)("Once upon\na time")["input_ids"] == [
        0, *vocabulary.encode("Once upon\na time")]


def test_a_tokenizer_that_encodes_differently_is_reported(tmp_path):
    other = train_vocabulary([f"the number {i} is {i * 7} and\nthat is all" for i in range(300)],
                             tmp_path / "other", vocab_size=300)
    save_tokenizer(demo_vocabulary_path(), tmp_path / "demo")
    with pytest.raises(CheckpointError, match=r"encodes 'Hello world' as \[.*but flantune"):
        check_tokenizer(tmp_path / "demo", other, ["Hello world"], add_bos=False, add_eos=True)


def test_a_vocabulary_larger_than_the_model_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="8000 ids .* more than the model's vocab_size 96"):
        save_tokenizer(demo_vocabulary_path(), tmp_path, vocab_size=96)
    assert not list(tmp_path.iterdir())


def test_a_bpe_vocabulary_is_refused(tmp_path):
    bpe = train_vocabulary([f"word{i} other{i % 7}" for i in range(400)], tmp_path / "bpe",
                           vocab_size=300, model_type="bpe")
    with pytest.raises(CheckpointError, match="only unigram"):
        save_tokenizer(bpe, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_vocabulary_with_other_special_ids_is_refused(tmp_path):
    import sentencepiece as spm

    prefix = tmp_path / "llama_style"
    (tmp_path / "text.txt").write_text("\n".join(f"line {i} of text" for i in range(300)))
    spm.SentencePieceTrainer.train(input=str(tmp_path / "text.txt"), model_prefix=str(prefix),
                                   vocab_size=40, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
                                   minloglevel=2)
    with pytest.raises(CheckpointError, match="needs pad 0 '<pad>', eos 1"):
        save_tokenizer(f"{prefix}.model", tmp_path / "out")
