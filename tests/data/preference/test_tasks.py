"""Preference tasks: pairs tokenized as TRL's DPOTrainer tokenizes them (its own dataset
preparation is the reference, through the chat template or as plain text), the SeqIO path, the
stream's examples and their errors."""

from __future__ import annotations

import json
import shutil
import types

import numpy as np
import pytest
import seqio

from flantune.data import JsonlSource, RecordError
from flantune.data.chat import get_chat_template
from flantune.data.hf_vocabulary import HfTokenizerVocabulary
from flantune.data.preference import preference_task
from flantune.data.stream import task_examples
from flantune.data.vocabulary import demo_chat_tokenizer_path

CONVERSATIONAL = [
    {"prompt": [{"role": "user", "content": f"What is {i} plus {i}?"}],
     "chosen": [{"role": "assistant", "content": f"It is {2 * i}."}],
     "rejected": [{"role": "assistant", "content": f"Maybe {2 * i + 1}, I think."}]}
    for i in range(6)
] + [{"prompt": [{"role": "system", "content": "Answer briefly."},
                 {"role": "user", "content": "Name a colour."},
                 {"role": "assistant", "content": "Red."},
                 {"role": "user", "content": "Another one?"}],
      "chosen": [{"role": "assistant", "content": "Blue."}],
      "rejected": [{"role": "assistant", "content": "No."}]}]
TEXT = [{"prompt": f"Question {i}: what is {i} plus {i * 3}?\nAnswer:",
         "chosen": f" {i * 4}.", "rejected": f" {i * 4 + 2}, roughly."} for i in range(6)]


@pytest.fixture(scope="module")
def bos_tokenizer(tmp_path_factory):
    """The demo chat tokenizer with a post-processor that puts <s> first (as Llama's does), so
    ``tokenizer(text)`` and ``apply_chat_template`` differ in their special tokens."""
    directory = tmp_path_factory.mktemp("bos_tokenizer")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(f"{demo_chat_tokenizer_path()}/{name}", directory / name)
    data = json.loads((directory / "tokenizer.json").read_text())
    bos = next(t["id"] for t in data["added_tokens"] if t["content"] == "<s>")
    data["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                   {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                 {"Sequence": {"id": "A", "type_id": 0}},
                 {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [bos], "tokens": ["<s>"]}}}
    (directory / "tokenizer.json").write_text(json.dumps(data))
    return directory


def _file(tmp_path, records) -> str:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def _task(name, path, vocabulary, template=None):
    @preference_task(name, splits=("train",), vocabulary=vocabulary, template=template)
    def records(split):
        return JsonlSource(path, format="preference", task=name)

    return records


def trl_tokenized(records, directory, template=None):
    """TRL's DPOTrainer dataset preparation of ``records`` (prompt_ids, chosen_ids,
    rejected_ids per record)."""
    trl = pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory))
    if template is not None:
        tokenizer.chat_template = template.source
    args = trl.DPOConfig(output_dir=str(directory), report_to=[], max_length=None,
                         dataset_num_proc=None, use_cpu=True, bf16=False)
    fake = types.SimpleNamespace(_tokenizer=tokenizer)
    prepared = trl.DPOTrainer._prepare_dataset(fake, datasets.Dataset.from_list(records),
                                               tokenizer, args, "train")
    return [(r["prompt_ids"], r["chosen_ids"], r["rejected_ids"]) for r in prepared]


@pytest.mark.parametrize("template", ["llama2", "chatml"])
def test_conversational_pairs_tokenize_as_trl(tmp_path, template):
    directory = demo_chat_tokenizer_path()
    task = _task(f"test_pref_conv_{template}", _file(tmp_path, CONVERSATIONAL),
                 HfTokenizerVocabulary(directory), template)
    expected = trl_tokenized(CONVERSATIONAL, directory, get_chat_template(template))
    for index, (prompt, chosen, rejected) in enumerate(expected):
        encoded = task.encode("train", index)
        assert encoded.prompt_length == len(prompt)
        assert encoded.chosen.tolist() == prompt + chosen
        assert encoded.rejected.tolist() == prompt + rejected


def test_text_pairs_tokenize_as_trl_with_the_tokenizers_special_tokens(tmp_path, bos_tokenizer):
    vocabulary = HfTokenizerVocabulary(str(bos_tokenizer))
    task = _task("test_pref_text", _file(tmp_path, TEXT), vocabulary)
    expected = trl_tokenized(TEXT, bos_tokenizer)
    for index, (prompt, chosen, rejected) in enumerate(expected):
        encoded = task.encode("train", index)
        assert encoded.chosen.tolist() == prompt + chosen
        assert encoded.rejected.tolist() == prompt + rejected
        assert encoded.chosen[0] == vocabulary.bos_id and encoded.chosen[-1] == vocabulary.eos_id


def test_stream_examples_and_the_seqio_path_hold_the_same_pairs(tmp_path):
    vocabulary = HfTokenizerVocabulary(demo_chat_tokenizer_path())
    task = _task("test_pref_stream", _file(tmp_path, CONVERSATIONAL), vocabulary, "llama2")
    reader = task_examples("test_pref_stream", "train", seed=0)
    for k in range(len(CONVERSATIONAL)):
        example = reader.get_many([k])[0]
        encoded = task.encode("train", reader._record_index(k)[0])
        np.testing.assert_array_equal(example["chosen"], encoded.chosen)
        np.testing.assert_array_equal(example["rejected"], encoded.rejected)
        assert example["prompt_length"] == encoded.prompt_length
    dataset = seqio.get_mixture_or_task("test_pref_stream").get_dataset(
        sequence_length=None, split="train", shuffle=False)
    for index, example in enumerate(dataset.as_numpy_iterator()):
        encoded = task.encode("train", index)
        np.testing.assert_array_equal(example["chosen"], encoded.chosen)
        assert int(example["prompt_length"]) == encoded.prompt_length
    assert reader.rendered(0)["template"] == "llama2"


def test_a_bad_record_names_the_task_file_and_line(tmp_path):
    records = [TEXT[0], {"prompt": "q", "chosen": " same", "rejected": " same"}]
    path = _file(tmp_path, records)
    task = _task("test_pref_bad", path, HfTokenizerVocabulary(demo_chat_tokenizer_path()))
    # The source checks every record when first read.
    with pytest.raises(RecordError, match=rf"task 'test_pref_bad'.*{path}:2.*identical"):
        task.encode("train", 0)


def test_pairs_that_tokenize_alike_are_refused(tmp_path):
    vocabulary = HfTokenizerVocabulary(demo_chat_tokenizer_path())
    # Different strings, the same tokens: the byte-level tokenizer keeps both, so make the
    # difference vanish in the template instead (Llama-2 strips the assistant reply).
    records = [{"prompt": [{"role": "user", "content": "Hi"}],
                "chosen": [{"role": "assistant", "content": "Hello"}],
                "rejected": [{"role": "assistant", "content": "Hello  "}]}]
    task = _task("test_pref_alike", _file(tmp_path, records), vocabulary, "llama2")
    with pytest.raises(RecordError, match="tokenize identically"):
        task.encode("train", 0)
