"""Preference record formats: TRL's columns (strings, message lists, implicit prompts) and
Anthropic HH transcripts, with TRL's own prompt extraction as the reference where it applies."""

from __future__ import annotations

import json

import pytest

from flantune.data import JsonlSource, RecordError
from flantune.data.formats import apply_format
from flantune.data.preference.records import common_prefix, hh_preference, preference

USER = {"role": "user", "content": "What colour is the sky?"}
BLUE = {"role": "assistant", "content": "It is blue."}
GREEN = {"role": "assistant", "content": "It is green."}


def test_string_columns_pass_through():
    record = {"prompt": "2 + 2 =", "chosen": " 4", "rejected": " 5"}
    assert preference(record) == record


def test_message_columns_are_checked_and_canonical():
    record = {"prompt": [{"role": "human", "value": "Hi?"}],
              "chosen": [{"from": "gpt", "value": "Hello."}],
              "rejected": [{"role": "assistant", "content": "Go away."}]}
    assert preference(record) == {
        "prompt": [{"role": "user", "content": "Hi?"}],
        "chosen": [{"role": "assistant", "content": "Hello."}],
        "rejected": [{"role": "assistant", "content": "Go away."}]}


@pytest.mark.parametrize("chosen, rejected", [
    ([USER, BLUE], [USER, GREEN]),
    ("The sky is blue", "The sky is green"),
    ("Answer: 12", "Answer: 13"),
])
def test_implicit_prompt_equals_trl_extract_prompt(chosen, rejected):
    data_utils = pytest.importorskip("trl.data_utils")
    expected = data_utils.extract_prompt({"chosen": chosen, "rejected": rejected})
    split = common_prefix(chosen, rejected)
    assert (chosen[:split], chosen[split:], rejected[split:]) == (
        expected["prompt"], expected["chosen"], expected["rejected"])
    if isinstance(chosen, list):
        assert preference({"chosen": chosen, "rejected": rejected}) == expected


def test_implicit_string_prompt_keeps_the_space_with_the_completions():
    assert preference({"chosen": "The sky is blue", "rejected": "The sky is green"}) == {
        "prompt": "The sky is", "chosen": " blue", "rejected": " green"}


def test_a_completion_that_is_a_prefix_of_the_other_is_refused():
    # (TRL's extract_prompt would cut the prompt one character early here.)
    with pytest.raises(RecordError, match="chosen completion is empty"):
        preference({"chosen": "ab", "rejected": "ab c"})


def test_hh_transcripts_split_into_turns_and_a_shared_prompt():
    chosen = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Capital of France?" \
             "\n\nAssistant: Paris."
    rejected = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Capital of France?" \
               "\n\nAssistant: I don't know."
    out = hh_preference({"chosen": chosen, "rejected": rejected})
    assert out["prompt"] == [{"role": "user", "content": "Hi there"},
                             {"role": "assistant", "content": "Hello!"},
                             {"role": "user", "content": "Capital of France?"}]
    assert out["chosen"] == [{"role": "assistant", "content": "Paris."}]
    assert out["rejected"] == [{"role": "assistant", "content": "I don't know."}]


@pytest.mark.parametrize("record, message", [
    ({"prompt": "q", "chosen": " a", "rejected": " a"}, "identical"),
    ({"prompt": [USER], "chosen": [BLUE], "rejected": [BLUE]}, "identical"),
    ({"prompt": "q", "chosen": "  ", "rejected": " b"}, "chosen completion is empty"),
    ({"prompt": "q", "chosen": " a"}, "missing field 'rejected'"),
    ({"prompt": "q", "chosen": [BLUE], "rejected": " b"}, "both be strings or both"),
    ({"prompt": "q", "chosen": [BLUE], "rejected": [GREEN]}, "give the prompt as messages"),
    ({"prompt": [USER], "chosen": [USER], "rejected": [GREEN]}, "must start with an assistant"),
    ({"prompt": [BLUE], "chosen": [BLUE], "rejected": [GREEN]}, "bad role sequence"),
    ({"chosen": [BLUE], "rejected": [GREEN]}, "prompt has no message"),
    ({"prompt": [USER], "chosen": [{"role": "assistant", "content": ""}],
      "rejected": [GREEN]}, "empty assistant turn"),
    ({"prompt": [USER], "chosen": [], "rejected": [GREEN]}, "non-empty list"),
])
def test_bad_records_are_refused_with_the_reason(record, message):
    with pytest.raises(RecordError, match=message):
        preference(record)


@pytest.mark.parametrize("chosen, message", [
    ("Human: no leading blank line\n\nAssistant: x", "must start with"),
    ("\n\nHuman: Hi\n\nAssistant:", "empty assistant turn"),
])
def test_bad_hh_transcripts_are_refused(chosen, message):
    with pytest.raises(RecordError, match=message):
        hh_preference({"chosen": chosen, "rejected": "\n\nHuman: Hi\n\nAssistant: Yo"})


def test_a_bad_line_is_reported_with_its_file_and_line(tmp_path):
    path = tmp_path / "pairs.jsonl"
    lines = [{"prompt": "q", "chosen": " a", "rejected": " b"},
             {"prompt": "q", "chosen": " a", "rejected": " a"}]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    source = JsonlSource(path, format="preference", task="pairs")
    assert apply_format("preference", lines[0])
    with pytest.raises(RecordError, match=rf"{path}:2.*identical"):
        list(source)
