"""Tests for flantune.data.formats: instruction and conversation formats."""

from __future__ import annotations

import pytest

from flantune.data.errors import RecordError, UnknownNameError
from flantune.data.formats import (
    apply_format,
    format_names,
    get_format,
    register_format,
)

# --------------------------------------------------------------------------- instruction formats


def test_alpaca_with_and_without_input():
    with_input = {"instruction": "Classify the sentiment.", "input": "The soup was cold.",
                  "output": "Negative"}
    without = {"instruction": "Name three primary colours.", "output": "Red, yellow and blue."}
    assert apply_format("alpaca", with_input) == [
        {"instruction": "Classify the sentiment.", "context": "The soup was cold.",
         "response": "Negative"}]
    assert apply_format("alpaca", without) == [
        {"instruction": "Name three primary colours.", "context": "",
         "response": "Red, yellow and blue."}]


def test_alpaca_null_input_counts_as_absent():
    record = {"instruction": "Say hello.", "input": None, "output": "Hello."}
    assert apply_format("alpaca", record)[0]["context"] == ""


def test_dolly_keeps_category_and_defaults_it():
    record = {"instruction": "When was the bridge finished?",
              "context": "Work began in 1929 and the bridge opened in 1932.",
              "response": "In 1932.", "category": "closed_qa"}
    assert apply_format("dolly", record) == [
        {"instruction": "When was the bridge finished?",
         "context": "Work began in 1929 and the bridge opened in 1932.",
         "response": "In 1932.", "category": "closed_qa"}]
    no_category = {"instruction": "Suggest a hobby.", "response": "Birdwatching."}
    assert apply_format("dolly", no_category)[0] == {
        "instruction": "Suggest a hobby.", "context": "", "response": "Birdwatching.",
        "category": ""}


def test_self_instruct_generated_instance_shape():
    record = {"instruction": "Convert the temperature to Celsius.", "input": "50 F",
              "output": "10 C"}
    assert apply_format("self_instruct", record) == [
        {"instruction": "Convert the temperature to Celsius.", "context": "50 F",
         "response": "10 C"}]


def test_self_instruct_seed_task_expands_instances():
    record = {"id": "seed_task_7", "name": "antonyms", "is_classification": False,
              "instruction": "Give the antonym of the word.",
              "instances": [{"input": "hot", "output": "cold"},
                            {"input": "early", "output": "late"}]}
    assert apply_format("self_instruct", record) == [
        {"instruction": "Give the antonym of the word.", "context": "hot", "response": "cold"},
        {"instruction": "Give the antonym of the word.", "context": "early", "response": "late"}]


def test_self_instruct_gpt3_finetuning_shape_strips_end_of_text():
    record = {"prompt": "Write a title for the story.\n\nA fox learns to swim.\n\n",
              "completion": "The Swimming Fox<|endoftext|>"}
    assert apply_format("self_instruct", record) == [
        {"instruction": "Write a title for the story.\n\nA fox learns to swim.\n\n",
         "context": "", "response": "The Swimming Fox"}]


def test_self_instruct_bad_instance_names_its_position():
    record = {"instruction": "Spell it backwards.",
              "instances": [{"input": "abc", "output": "cba"}, {"input": "xy", "output": ""}]}
    with pytest.raises(RecordError, match=r"instances\[1\].*'output' is empty"):
        apply_format("self_instruct", record)


def test_prompt_completion():
    assert apply_format("prompt_completion", {"prompt": "2 + 2 =", "completion": " 4"}) == [
        {"prompt": "2 + 2 =", "completion": " 4"}]


@pytest.mark.parametrize("fmt, record, message", [
    ("alpaca", {"instruction": "x"}, r"missing field 'output'.*\['instruction'\]"),
    ("alpaca", {"instruction": "x", "output": "  \n"}, r"field 'output' is empty"),
    ("alpaca", {"instruction": "", "output": "y"}, r"field 'instruction' is empty"),
    ("alpaca", {"instruction": "x", "output": None}, r"field 'output' is null"),
    ("alpaca", {"instruction": "x", "output": 7}, r"'output' must be a string, got int"),
    ("dolly", {"instruction": "x", "output": "y"}, r"missing field 'response'"),
    ("prompt_completion", {"prompt": "p"}, r"missing field 'completion'"),
    ("self_instruct", {"prompt": "p", "completion": "<|endoftext|>"}, r"empty apart from"),
    ("self_instruct", {"instruction": "x", "instances": []}, r"non-empty list"),
])
def test_instruction_format_errors(fmt, record, message):
    with pytest.raises(RecordError, match=message):
        apply_format(fmt, record)


# --------------------------------------------------------------------------- conversations


def _sharegpt(*turns):
    return {"conversations": [{"from": who, "value": text} for who, text in turns]}


def test_sharegpt_expands_one_record_per_assistant_turn():
    record = _sharegpt(("system", "Answer briefly."),
                       ("human", "Which planet is closest to the sun?"),
                       ("gpt", "Mercury."),
                       ("human", "And the farthest?"),
                       ("gpt", "Neptune."),
                       ("human", "How many moons does it have?"),
                       ("gpt", "Sixteen known moons."))
    records = apply_format("sharegpt", record)
    assert [r["turn"] for r in records] == [1, 2, 3]
    assert all(r["system"] == "Answer briefly." for r in records)
    assert records[0] == {"dialog": "User: Which planet is closest to the sun?",
                          "response": "Mercury.", "turn": 1, "system": "Answer briefly."}
    assert records[1]["dialog"] == ("User: Which planet is closest to the sun?\n"
                                    "Assistant: Mercury.\n"
                                    "User: And the farthest?")
    assert records[2]["dialog"] == ("User: Which planet is closest to the sun?\n"
                                    "Assistant: Mercury.\n"
                                    "User: And the farthest?\n"
                                    "Assistant: Neptune.\n"
                                    "User: How many moons does it have?")
    assert records[2]["response"] == "Sixteen known moons."


def test_sharegpt_trailing_user_turn_adds_no_record():
    record = _sharegpt(("human", "Hi"), ("gpt", "Hello!"), ("human", "Are you there?"))
    records = apply_format("sharegpt", record)
    assert len(records) == 1 and records[0]["response"] == "Hello!"


@pytest.mark.parametrize("turns, message", [
    ([("human", "a"), ("human", "b")], r"bad role sequence at message 2: got user; "
                                       r"expected an assistant message"),
    ([("gpt", "I speak first")], r"bad role sequence at message 1: got assistant; "
                                 r"expected a user message"),
    ([("human", "a"), ("gpt", "")], r"message 2: empty assistant turn"),
    ([("human", "a"), ("gpt", "b"), ("human", "c"), ("gpt", "   ")],
     r"message 4: empty assistant turn"),
    ([("human", "a"), ("bot", "b")], r"message 2 has unknown role 'bot'; known roles: "),
    ([("human", "a"), ("gpt", "b"), ("system", "c")], r"message 3: got system; a system "
                                                      r"message may only come first"),
    ([("human", "only a question")], r"no assistant turn"),
    ([("system", "just a system prompt")], r"no assistant turn"),
])
def test_sharegpt_errors_name_the_message(turns, message):
    with pytest.raises(RecordError, match=message):
        apply_format("sharegpt", _sharegpt(*turns))


def test_sharegpt_missing_conversations_field():
    with pytest.raises(RecordError, match=r"missing list field 'conversations'.*'messages'"):
        apply_format("sharegpt", {"messages": []})


def test_oasst_thread():
    record = {"messages": [
        {"role": "prompter", "text": "What is a haiku?"},
        {"role": "assistant", "text": "A three-line poem of 5, 7 and 5 syllables."},
        {"role": "prompter", "text": "Write one about tea."},
        {"role": "assistant", "text": "Steam curls from the cup\nleaves unfold their summer green\n"
                                      "the kettle goes still"}]}
    records = apply_format("oasst", record)
    assert [r["turn"] for r in records] == [1, 2]
    assert records[1]["dialog"] == ("User: What is a haiku?\n"
                                    "Assistant: A three-line poem of 5, 7 and 5 syllables.\n"
                                    "User: Write one about tea.")
    assert records[1]["response"].startswith("Steam curls")


def test_oasst_tree_gives_one_record_per_assistant_node_with_its_path():
    tree = {"message_tree_id": "t", "prompt": {
        "role": "prompter", "text": "Q1", "replies": [
            {"role": "assistant", "text": "A1", "replies": [
                {"role": "prompter", "text": "Q2", "replies": [
                    {"role": "assistant", "text": "A2a"},
                    {"role": "assistant", "text": "A2b"}]}]},
            {"role": "assistant", "text": "A1-alt"}]}}
    records = apply_format("oasst", tree)
    assert [(r["dialog"], r["response"], r["turn"]) for r in records] == [
        ("User: Q1", "A1", 1),
        ("User: Q1\nAssistant: A1\nUser: Q2", "A2a", 2),
        ("User: Q1\nAssistant: A1\nUser: Q2", "A2b", 2),
        ("User: Q1", "A1-alt", 1),
    ]


def test_oasst_tree_errors_name_the_node():
    tree = {"prompt": {"role": "prompter", "text": "Q", "replies": [
        {"role": "assistant", "text": "A", "replies": [
            {"role": "assistant", "text": "A again"}]}]}}
    with pytest.raises(RecordError, match=r"prompt\.replies\[0\]\.replies\[0\]: bad role "
                                          r"sequence at depth 3: got assistant"):
        apply_format("oasst", tree)
    empty = {"prompt": {"role": "prompter", "text": "Q", "replies": [
        {"role": "assistant", "text": ""}]}}
    with pytest.raises(RecordError, match=r"prompt\.replies\[0\]: message 2: empty assistant"):
        apply_format("oasst", empty)


def test_oasst_unknown_shape():
    with pytest.raises(RecordError, match=r"'messages' list.*'prompt' object"):
        apply_format("oasst", {"conversations": []})


# --------------------------------------------------------------------------- registry


def test_builtin_formats_are_registered():
    assert {"alpaca", "dolly", "self_instruct", "prompt_completion", "sharegpt",
            "oasst"} <= set(format_names())


def test_unknown_format_lists_known_ones():
    with pytest.raises(UnknownNameError, match=r"unknown record format 'alpacca'.*alpaca, "):
        get_format("alpacca")


def test_register_custom_format():
    def question_answer(raw):
        return {"instruction": raw["q"], "context": "", "response": raw["a"]}

    register_format("test_question_answer", question_answer)
    try:
        assert apply_format("test_question_answer", {"q": "Why?", "a": "Because."}) == [
            {"instruction": "Why?", "context": "", "response": "Because."}]
        with pytest.raises(ValueError, match="already registered"):
            register_format("test_question_answer", question_answer)
        register_format("test_question_answer", question_answer, overwrite=True)
    finally:
        from flantune.data import formats
        formats._FORMATS.pop("test_question_answer")


def test_format_returning_garbage_is_an_error():
    with pytest.raises(RecordError, match="must return a dict or a list of dicts"):
        apply_format(lambda raw: "nope", {"x": 1})


def test_format_returning_no_records_is_an_error():
    with pytest.raises(RecordError, match="produced no records"):
        apply_format(lambda raw: [], {"x": 1})
