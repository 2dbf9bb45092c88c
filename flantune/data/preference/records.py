"""Preference records: a prompt, a chosen and a rejected completion, from the common shapes.

A canonical preference record is ``{"prompt", "chosen", "rejected"}``, either all strings
(*standard*: the completions continue the prompt text) or all message lists
(*conversational*: the prompt is a conversation ending with a user turn, the completions are the
messages that follow it, an assistant reply first), as TRL's ``DPOTrainer`` takes them.

Formats registered here (selectable as ``format=NAME`` in every record source):

- ``preference``: TRL's ``prompt`` / ``chosen`` / ``rejected`` columns, strings or message lists;
  without ``prompt`` the prompt is implicit: the longest common prefix of chosen and rejected
  (messages; for strings up to the first differing character, a space before it kept with the
  completions), TRL's ``extract_prompt`` rule;
- ``hh_preference``: Anthropic HH-RLHF full transcripts (``"\\n\\nHuman: ...\\n\\nAssistant:
  ..."`` in ``chosen`` and ``rejected``), split into messages, the shared turns as the prompt.

Records whose chosen and rejected completions are identical or empty are refused (RecordError,
located by the record source): they carry no preference.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from flantune.data import formats
from flantune.data.errors import RecordError
from flantune.data.formats import ASSISTANT, SYSTEM, USER, check_role_sequence, register_format

Message = dict[str, str]
_ROLES = {"user": USER, "human": USER, "assistant": ASSISTANT, "gpt": ASSISTANT,
          "system": SYSTEM}
_HH_TURN = re.compile(r"\n\n(Human|Assistant):[ ]?")


def is_conversational(record: Mapping[str, Any]) -> bool:
    """Whether a canonical record holds message lists (else strings)."""
    return isinstance(record.get("chosen"), list)


def _message_list(value: Any, field: str) -> list[Message]:
    if not isinstance(value, list) or not value:
        raise RecordError(f"'{field}' must be a non-empty list of messages")
    return [dict(zip(("role", "content"),
                     formats._message(m, n, _ROLES, ("role", "from"), ("content", "value")),
                     strict=True))
            for n, m in enumerate(value, start=1)]


def _check_conversational(prompt: list[Message], chosen: list[Message],
                          rejected: list[Message]) -> None:
    if not prompt:
        raise RecordError("the prompt has no message: a conversational preference pair "
                          "answers at least one user turn")
    for name, completion in (("chosen", chosen), ("rejected", rejected)):
        if not completion:
            raise RecordError(f"the {name} completion has no message after the prompt")
        if completion[0]["role"] != ASSISTANT:
            raise RecordError(f"the {name} completion must start with an assistant reply; it "
                              f"starts with a {completion[0]['role']} message")
        try:
            check_role_sequence([m["role"] for m in prompt + completion])
        except RecordError as err:
            raise RecordError(f"prompt + {name}: {err}") from None


def _check_distinct(chosen: Any, rejected: Any) -> None:
    if chosen == rejected:
        raise RecordError("chosen and rejected are identical, so the pair states no "
                          "preference; fix or remove the record")


def common_prefix(chosen: Sequence, rejected: Sequence) -> int:
    """TRL's implicit-prompt split: the first index where ``chosen`` and ``rejected`` differ
    (for strings one less when the character before it is a space, so the completions keep it).
    """
    index = min(len(chosen), len(rejected))
    for i in range(index):
        if chosen[i] != rejected[i]:
            index = i
            if isinstance(chosen, str) and i > 0 and chosen[i - 1] == " ":
                index -= 1
            break
    return index


def preference(raw: Mapping[str, Any]) -> dict[str, Any]:
    """TRL's preference columns (see the module docstring)."""
    raw = formats._require_mapping(raw)
    for field in ("chosen", "rejected"):
        if field not in raw or raw[field] is None:
            raise RecordError(f"missing field '{field}'; a preference record has 'chosen' and "
                              f"'rejected' (and 'prompt'); it has fields {formats._keys(raw)}")
    conversational = isinstance(raw["chosen"], list)
    if isinstance(raw["rejected"], list) != conversational:
        raise RecordError("'chosen' and 'rejected' must both be strings or both be message "
                          "lists")
    if conversational:
        chosen = _message_list(raw["chosen"], "chosen")
        rejected = _message_list(raw["rejected"], "rejected")
        if raw.get("prompt") is None:
            split = common_prefix(chosen, rejected)
            prompt, chosen, rejected = chosen[:split], chosen[split:], rejected[split:]
        elif isinstance(raw["prompt"], list):
            prompt = _message_list(raw["prompt"], "prompt")
        else:
            raise RecordError("'prompt' is a string but the completions are message lists; give "
                              "the prompt as messages too (e.g. [{'role': 'user', 'content': "
                              "...}])")
        _check_distinct(chosen, rejected)
        _check_conversational(prompt, chosen, rejected)
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    chosen = formats._text(raw, "chosen", nonempty=False)
    rejected = formats._text(raw, "rejected", nonempty=False)
    if raw.get("prompt") is None:
        split = common_prefix(chosen, rejected)
        prompt, chosen, rejected = chosen[:split], chosen[split:], rejected[split:]
    else:
        prompt = formats._text(raw, "prompt", nonempty=False)
    _check_distinct(chosen, rejected)
    for name, text in (("chosen", chosen), ("rejected", rejected)):
        if not text.strip():
            raise RecordError(f"the {name} completion is empty")
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def hh_messages(transcript: str, field: str) -> list[Message]:
    """An Anthropic HH transcript as messages."""
    parts = _HH_TURN.split(transcript)
    if parts[0].strip():
        raise RecordError(f"'{field}' must start with '\\n\\nHuman: '; it starts with "
                          f"{formats._preview(parts[0])}")
    messages = []
    for speaker, text in zip(parts[1::2], parts[2::2], strict=True):
        messages.append({"role": USER if speaker == "Human" else ASSISTANT, "content": text})
    if not messages:
        raise RecordError(f"'{field}' has no '\\n\\nHuman: ' / '\\n\\nAssistant: ' turns")
    for number, message in enumerate(messages, start=1):
        if not message["content"].strip():
            raise RecordError(f"'{field}' message {number}: empty {message['role']} turn")
    return messages


def hh_preference(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Anthropic HH-RLHF ``chosen`` / ``rejected`` transcripts (see the module docstring)."""
    raw = formats._require_mapping(raw)
    chosen = hh_messages(formats._text(raw, "chosen"), "chosen")
    rejected = hh_messages(formats._text(raw, "rejected"), "rejected")
    split = common_prefix(chosen, rejected)
    prompt, chosen, rejected = chosen[:split], chosen[split:], rejected[split:]
    _check_distinct(chosen, rejected)
    _check_conversational(prompt, chosen, rejected)
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def preference_of(record: Mapping[str, Any]) -> dict[str, Any]:
    """The checked canonical pair of a preference task's record (after its format and
    ``record_fn``)."""
    if not isinstance(record, Mapping) or not {"chosen", "rejected"} <= set(record):
        raise RecordError("a preference task's record needs 'prompt', 'chosen' and 'rejected'; "
                          "give its source format='preference' (TRL's columns) or "
                          "format='hh_preference', or return such records")
    return preference(record)


for _name, _fn in [("preference", preference), ("hh_preference", hh_preference)]:
    register_format(_name, _fn, overwrite=True)
