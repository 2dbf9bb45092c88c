"""Conversation formats: every shape feeds the chat path as {"messages": [...]}."""

from __future__ import annotations

import pytest

import flantune.data.chat  # noqa: F401 - registers the *_messages formats
from flantune.data import RecordError
from flantune.data.formats import apply_format

U, A, S = "user", "assistant", "system"


def _roles(record):
    return [(m["role"], m["content"]) for m in record["messages"]]


def test_messages_format_with_system_field_and_trailing_user_message():
    raw = {"system": "Be brief.", "messages": [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "unanswered"}]}
    assert _roles(apply_format("messages", raw)[0]) == [(S, "Be brief."), (U, "Hi"),
                                                          (A, "Hello")]


def test_sharegpt_messages_is_one_conversation():
    raw = {"conversations": [{"from": "system", "value": "sys"}, {"from": "human", "value": "q1"},
                             {"from": "gpt", "value": "a1"}, {"from": "human", "value": "q2"},
                             {"from": "gpt", "value": "a2"}]}
    records = apply_format("sharegpt_messages", raw)
    assert len(records) == 1
    assert _roles(records[0]) == [(S, "sys"), (U, "q1"), (A, "a1"), (U, "q2"), (A, "a2")]


def test_oasst_tree_gives_one_conversation_per_deepest_reply():
    tree = {"prompt": {"role": "prompter", "text": "q", "replies": [
        {"role": "assistant", "text": "a1", "replies": [
            {"role": "prompter", "text": "q2", "replies": [
                {"role": "assistant", "text": "a2"}]},
            {"role": "prompter", "text": "q3 (unanswered)"}]},
        {"role": "assistant", "text": "b1"}]}}
    records = apply_format("oasst_messages", tree)
    assert [_roles(r) for r in records] == [
        [(U, "q"), (A, "a1"), (U, "q2"), (A, "a2")], [(U, "q"), (A, "b1")]]
    thread = {"messages": [{"role": "prompter", "text": "q"}, {"role": "assistant", "text": "a"}]}
    assert [_roles(r) for r in apply_format("oasst_messages", thread)] == [[(U, "q"), (A, "a")]]


def test_instruction_records_are_one_turn_conversations():
    dolly = {"instruction": "Summarize.", "context": "Some text.", "response": "Short."}
    assert _roles(apply_format("dolly_messages", dolly)[0]) == [
        (U, "Summarize.\n\nSome text."), (A, "Short.")]
    alpaca = {"instruction": "Say hi.", "input": "", "output": "hi"}
    assert _roles(apply_format("alpaca_messages", alpaca)[0]) == [(U, "Say hi."), (A, "hi")]
    completion = {"prompt": "2+2=", "completion": "4"}
    assert _roles(apply_format("prompt_completion_messages", completion)[0]) == [
        (U, "2+2="), (A, "4")]
    seeds = {"instruction": "Add.", "instances": [{"input": "1 2", "output": "3"},
                                                  {"input": "2 2", "output": "4"}]}
    assert [_roles(r) for r in apply_format("self_instruct_messages", seeds)] == [
        [(U, "Add.\n\n1 2"), (A, "3")], [(U, "Add.\n\n2 2"), (A, "4")]]


@pytest.mark.parametrize("raw,message", [
    ({"messages": [{"role": "assistant", "content": "a"}]}, "expected a user message"),
    ({"messages": [{"role": "user", "content": "q"}]}, "no assistant turn"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "system", "content": "s"}]},
     "a system message may only come first"),
    ({"messages": [{"role": "robot", "content": "q"}]}, "unknown role 'robot'"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " "}]},
     "empty assistant turn"),
    ({"system": "s", "messages": [{"role": "system", "content": "s"}]}, "keep one"),
    ({"turns": []}, "missing list field 'messages'"),
])
def test_bad_conversations_are_clear_errors(raw, message):
    with pytest.raises(RecordError, match=message):
        apply_format("messages", raw)
