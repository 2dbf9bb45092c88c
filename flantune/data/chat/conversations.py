"""Whole conversations from the common record shapes, as ``{"messages": [...]}`` records.

A conversation is a list of ``{"role": "system" | "user" | "assistant", "content": str}``
messages (the OpenAI / Hugging Face shape ``apply_chat_template`` takes): an optional system
message first, then user and assistant alternating, user first, ending with an assistant turn.

Formats registered here (selectable as ``format=NAME`` in every record source):

- ``messages``: ``{"messages": [{"role", "content"}, ...]}``, optional top-level ``"system"``;
- ``sharegpt_messages``: ShareGPT ``{"conversations": [{"from", "value"}, ...]}``;
- ``oasst_messages``: an OpenAssistant thread, or a message tree -> one conversation per
  assistant reply that has no assistant reply below it, so every assistant reply is trained
  (replies above a branch are shared by the conversations below them);
- ``dolly_messages``, ``alpaca_messages``, ``self_instruct_messages``,
  ``prompt_completion_messages``: one-turn conversations (the instruction, then a blank line and
  the context when there is one, as the user turn; the response as the assistant turn).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from flantune.data import formats
from flantune.data.errors import RecordError
from flantune.data.formats import ASSISTANT, SYSTEM, USER, check_role_sequence, register_format

Message = dict[str, str]

_MESSAGE_ROLES = {"user": USER, "human": USER, "assistant": ASSISTANT, "gpt": ASSISTANT,
                  "system": SYSTEM}


def check_conversation(messages: Sequence[Mapping[str, str]]) -> list[Message]:
    """Canonical messages, checked: system first (optional), then user/assistant alternating
    from the user, ending with an assistant turn (the last user message of a conversation
    without its answer is dropped: it has nothing to learn)."""
    out = [{"role": m["role"], "content": m["content"]} for m in messages]
    start = check_role_sequence([m["role"] for m in out])
    while len(out) > start and out[-1]["role"] == USER:
        out.pop()
    if len(out) == start:
        raise RecordError("conversation has no assistant turn, so nothing to learn from it")
    return out


def _pairs_to_messages(pairs: Sequence[tuple[str, str]]) -> list[Message]:
    return [{"role": role, "content": text} for role, text in pairs]


def _messages(raw: Mapping[str, Any], field: str, roles: Mapping[str, str],
              role_keys: Sequence[str], text_keys: Sequence[str]) -> list[tuple[str, str]]:
    """(role, text) of each message of the list field ``field``."""
    thread = raw.get(field)
    if not isinstance(thread, list):
        raise RecordError(f"missing list field '{field}' "
                          f"(the record has fields {formats._keys(raw)})")
    return [formats._message(m, n, roles, role_keys, text_keys)
            for n, m in enumerate(thread, start=1)]


def messages_format(raw: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI / Hugging Face ``messages`` (``role``, ``content``), optional ``system``."""
    raw = formats._require_mapping(raw)
    pairs = _messages(raw, "messages", _MESSAGE_ROLES, ("role",), ("content",))
    system = formats._text(raw, "system", required=False)
    if system.strip():
        if pairs and pairs[0][0] == SYSTEM:
            raise RecordError("the record has both a 'system' field and a leading system "
                              "message; keep one")
        pairs.insert(0, (SYSTEM, system))
    return {"messages": check_conversation(_pairs_to_messages(pairs))}


def sharegpt_messages(raw: Mapping[str, Any]) -> dict[str, Any]:
    """ShareGPT ``conversations`` as one conversation."""
    raw = formats._require_mapping(raw)
    pairs = _messages(raw, "conversations", formats._SHAREGPT_ROLES, ("from", "role"),
                      ("value", "content"))
    return {"messages": check_conversation(_pairs_to_messages(pairs))}


def oasst_messages(raw: Mapping[str, Any]) -> list[dict[str, Any]]:
    """An OpenAssistant thread (one conversation) or message tree (one per deepest reply)."""
    raw = formats._require_mapping(raw)
    if "messages" in raw:
        thread = raw["messages"]
        if not isinstance(thread, list):
            raise RecordError("field 'messages' must be a list of messages")
        pairs = [formats._message(m, n, formats._OASST_ROLES, ("role",), ("text", "content"))
                 for n, m in enumerate(thread, start=1)]
        return [{"messages": check_conversation(_pairs_to_messages(pairs))}]
    if "prompt" in raw:
        found: list[list[tuple[str, str]]] = []
        _deepest_paths(raw["prompt"], [], "prompt", found)
        if not found:
            raise RecordError("message tree has no assistant reply, so nothing to learn from it")
        return [{"messages": check_conversation(_pairs_to_messages(p))} for p in found]
    raise RecordError("expected an OpenAssistant thread ('messages' list) or message tree "
                      f"('prompt' object); the record has fields {formats._keys(raw)}")


def _deepest_paths(node: Any, path: list[tuple[str, str]], where: str,
                   found: list[list[tuple[str, str]]]) -> bool:
    """Adds the path to every assistant node with no assistant below it; returns whether the
    subtree of ``node`` holds an assistant node."""
    role, text, replies = formats.tree_node(node, len(path), where)
    here = [*path, (role, text)]
    below = False
    for i, reply in enumerate(replies):
        below = _deepest_paths(reply, here, f"{where}.replies[{i}]", found) or below
    if role == ASSISTANT and not below:
        found.append(here)
    return below or role == ASSISTANT


def _one_turn(record: Mapping[str, str]) -> dict[str, Any]:
    context = record.get("context", "")
    user = record["instruction"] + (f"\n\n{context}" if context.strip() else "")
    return {"messages": [{"role": USER, "content": user},
                         {"role": ASSISTANT, "content": record["response"]}]}


def dolly_messages(raw: Mapping[str, Any]) -> dict[str, Any]:
    return _one_turn(formats.dolly(raw))


def alpaca_messages(raw: Mapping[str, Any]) -> dict[str, Any]:
    return _one_turn(formats.alpaca(raw))


def self_instruct_messages(raw: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [_one_turn(r) for r in formats.self_instruct(raw)]


def prompt_completion_messages(raw: Mapping[str, Any]) -> dict[str, Any]:
    record = formats.prompt_completion(raw)
    return {"messages": [{"role": USER, "content": record["prompt"]},
                         {"role": ASSISTANT, "content": record["completion"]}]}


def conversation_of(record: Mapping[str, Any]) -> list[Message]:
    """The checked messages of a canonical ``{"messages": [...]}`` record (a chat task's record
    after its format and ``record_fn``)."""
    messages = record.get("messages") if isinstance(record, Mapping) else None
    if not isinstance(messages, list) or not all(
            isinstance(m, Mapping) and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str) for m in messages):
        raise RecordError("a chat task's record needs 'messages': a list of {'role': str, "
                          "'content': str}; give its source a *_messages format (e.g. "
                          "format='sharegpt_messages') or return such records")
    return check_conversation(messages)


for _name, _fn in [("messages", messages_format), ("sharegpt_messages", sharegpt_messages),
                   ("oasst_messages", oasst_messages), ("dolly_messages", dolly_messages),
                   ("alpaca_messages", alpaca_messages),
                   ("self_instruct_messages", self_instruct_messages),
                   ("prompt_completion_messages", prompt_completion_messages)]:
    register_format(_name, _fn, overwrite=True)
