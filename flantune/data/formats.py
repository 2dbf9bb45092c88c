"""Instruction and conversation formats: raw records -> canonical fields.

A *format* is a function ``raw_record -> dict | list[dict]`` that checks a raw record and
returns one or more canonical records. Formats raise :class:`RecordError` without a location;
the record source that calls them adds the file and line.

Canonical fields by format:

- ``alpaca``, ``dolly``, ``self_instruct`` -> ``{"instruction", "context", "response"}``
  (``dolly`` adds ``"category"``, ``""`` when absent).
- ``prompt_completion`` -> ``{"prompt", "completion"}``.
- ``sharegpt``, ``oasst`` -> one record per assistant message:
  ``{"dialog", "response", "turn", "system"}``. ``dialog`` renders the earlier messages as
  ``"User: ...\\nAssistant: ..."`` and ends with the user message being answered; ``turn`` is the
  1-based number of the answer among the assistant messages of its conversation (its depth, for
  an OpenAssistant tree); ``system`` is the leading system prompt or ``""``.

Users add their own with :func:`register_format`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from flantune.data.errors import RecordError, UnknownNameError

FormatFn = Callable[[Mapping[str, Any]], "dict[str, Any] | list[dict[str, Any]]"]

USER, ASSISTANT, SYSTEM = "user", "assistant", "system"
_SPEAKER = {USER: "User", ASSISTANT: "Assistant"}

_FORMATS: dict[str, FormatFn] = {}


# --------------------------------------------------------------------------- registry


def register_format(name: str, fn: FormatFn, *, overwrite: bool = False) -> None:
    """Make ``fn`` selectable as ``format=name`` in the record sources."""
    if not callable(fn):
        raise TypeError(f"format '{name}' must be a callable raw_record -> dict | list[dict]")
    if name in _FORMATS and not overwrite:
        raise ValueError(
            f"format '{name}' is already registered; pass overwrite=True to replace it"
        )
    _FORMATS[name] = fn


def format_names() -> list[str]:
    """The names of all registered formats, sorted."""
    return sorted(_FORMATS)


def get_format(fmt: str | FormatFn) -> FormatFn:
    """The format function registered as ``fmt`` (callables pass through unchanged)."""
    if callable(fmt):
        return fmt
    try:
        return _FORMATS[fmt]
    except KeyError:
        raise UnknownNameError(
            f"unknown record format '{fmt}'; known formats: {', '.join(format_names())}. "
            "Register your own with flantune.data.formats.register_format(name, fn)."
        ) from None


def apply_format(fmt: str | FormatFn, raw: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Run a format on one raw record and return its canonical records as a list."""
    out = get_format(fmt)(raw)
    if isinstance(out, Mapping):
        return [dict(out)]
    if isinstance(out, Sequence) and not isinstance(out, str) and out and all(
            isinstance(r, Mapping) for r in out):
        return [dict(r) for r in out]
    if isinstance(out, Sequence) and not out:
        raise RecordError(f"format {fmt!r} produced no records; a format rejects a record by "
                          "raising RecordError, so it is reported instead of silently dropped")
    raise RecordError(
        f"format {fmt!r} returned {type(out).__name__}; a format must return a dict or a "
        "list of dicts"
    )


# --------------------------------------------------------------------------- field helpers


def _text(raw: Mapping[str, Any], *names: str, required: bool = True,
          nonempty: bool = True) -> str:
    """The first present field among ``names`` as a string ("" if optional and absent)."""
    for name in names:
        if name in raw and raw[name] is not None:
            value = raw[name]
            if not isinstance(value, str):
                raise RecordError(
                    f"field '{name}' must be a string, got {type(value).__name__}: "
                    f"{_preview(value)}"
                )
            if nonempty and required and not value.strip():
                raise RecordError(f"field '{name}' is empty; every record needs a non-empty "
                                  f"'{name}'")
            return value
    if required:
        null = [n for n in names if n in raw]
        if null:
            raise RecordError(f"field '{null[0]}' is null; every record needs a non-empty "
                              f"'{null[0]}'")
        alternatives = " or ".join(f"'{n}'" for n in names)
        raise RecordError(
            f"missing field {alternatives}; the record has fields {_keys(raw)}"
        )
    return ""


def _keys(raw: Mapping[str, Any]) -> str:
    return "[" + ", ".join(repr(k) for k in raw) + "]"


def _preview(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _require_mapping(raw: Any) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise RecordError(f"expected a JSON object, got {type(raw).__name__}: {_preview(raw)}")
    return raw


# --------------------------------------------------------------------------- instruction formats


def alpaca(raw: Mapping[str, Any]) -> dict[str, str]:
    """Alpaca: ``instruction``, optional ``input``, ``output``."""
    raw = _require_mapping(raw)
    return {
        "instruction": _text(raw, "instruction"),
        "context": _text(raw, "input", required=False),
        "response": _text(raw, "output"),
    }


def dolly(raw: Mapping[str, Any]) -> dict[str, str]:
    """Databricks Dolly: ``instruction``, optional ``context`` and ``category``, ``response``."""
    raw = _require_mapping(raw)
    return {
        "instruction": _text(raw, "instruction"),
        "context": _text(raw, "context", required=False),
        "response": _text(raw, "response"),
        "category": _text(raw, "category", required=False),
    }


_GPT3_END_OF_TEXT = "<|endoftext|>"


def self_instruct(raw: Mapping[str, Any]) -> list[dict[str, str]]:
    """Self-Instruct, in any of the three shapes of its public release.

    - generated instances (``all_generated_instances.jsonl``): ``instruction``, ``input``,
      ``output``;
    - seed / user-oriented tasks (``seed_tasks.jsonl``): ``instruction`` and a list of
      ``instances``, each with ``input`` and ``output`` -> one record per instance;
    - GPT-3 fine-tuning files (``gpt3_finetuning_data_*.jsonl``): ``prompt``, ``completion``;
      the prompt becomes the instruction (it already contains the input) and the trailing
      ``<|endoftext|>`` is removed from the completion.
    """
    raw = _require_mapping(raw)
    if "instruction" not in raw and "prompt" in raw:
        completion = _text(raw, "completion")
        completion = completion.removesuffix(_GPT3_END_OF_TEXT)
        if not completion.strip():
            raise RecordError("field 'completion' is empty apart from '<|endoftext|>'")
        return [{"instruction": _text(raw, "prompt"), "context": "", "response": completion}]
    instruction = _text(raw, "instruction")
    if "instances" in raw:
        instances = raw["instances"]
        if not isinstance(instances, list) or not instances:
            raise RecordError("field 'instances' must be a non-empty list of "
                              "{'input': ..., 'output': ...} objects")
        records = []
        for number, instance in enumerate(instances, start=1):
            try:
                instance = _require_mapping(instance)
                records.append({"instruction": instruction,
                                "context": _text(instance, "input", required=False),
                                "response": _text(instance, "output")})
            except RecordError as err:
                raise RecordError(f"instances[{number - 1}]: {err}") from None
        return records
    return [{"instruction": instruction,
             "context": _text(raw, "input", required=False),
             "response": _text(raw, "output")}]


def prompt_completion(raw: Mapping[str, Any]) -> dict[str, str]:
    """A prompt and the completion to learn (TRL / OpenAI fine-tuning style)."""
    raw = _require_mapping(raw)
    return {"prompt": _text(raw, "prompt"), "completion": _text(raw, "completion")}


# --------------------------------------------------------------------------- conversations

_SHAREGPT_ROLES = {"human": USER, "user": USER, "gpt": ASSISTANT, "assistant": ASSISTANT,
                   "system": SYSTEM}
_OASST_ROLES = {"prompter": USER, "user": USER, "assistant": ASSISTANT, "system": SYSTEM}


def _message(message: Any, number: int, roles: Mapping[str, str], role_keys: Sequence[str],
             text_keys: Sequence[str]) -> tuple[str, str]:
    """(canonical role, text) of one message; ``number`` is its 1-based position."""
    if not isinstance(message, Mapping):
        raise RecordError(f"message {number} must be an object, got {_preview(message)}")
    role_key = next((k for k in role_keys if k in message), None)
    if role_key is None:
        raise RecordError(f"message {number} has no {' or '.join(map(repr, role_keys))} field")
    role = message[role_key]
    if role not in roles:
        raise RecordError(f"message {number} has unknown role {role!r}; known roles: "
                          f"{', '.join(sorted(roles))}")
    text_key = next((k for k in text_keys if k in message), None)
    if text_key is None:
        raise RecordError(f"message {number} ({role}) has no "
                          f"{' or '.join(map(repr, text_keys))} field")
    text = message[text_key]
    if not isinstance(text, str):
        raise RecordError(f"message {number} ({role}): '{text_key}' must be a string, got "
                          f"{type(text).__name__}")
    if not text.strip():
        what = "assistant turn" if roles[role] == ASSISTANT else f"{role} message"
        raise RecordError(f"message {number}: empty {what}")
    return roles[role], text


def render_dialog(turns: Sequence[tuple[str, str]]) -> str:
    """``"User: ...\\nAssistant: ..."`` for (role, text) pairs of user/assistant turns."""
    return "\n".join(f"{_SPEAKER[role]}: {text}" for role, text in turns)


def check_role_sequence(roles: Sequence[str]) -> int:
    """Raises a RecordError unless ``roles`` are an optional system message, then user and
    assistant alternating from the user; returns where the user/assistant turns start."""
    start = 1 if roles and roles[0] == SYSTEM else 0
    for position in range(start, len(roles)):
        role = roles[position]
        expected = USER if (position - start) % 2 == 0 else ASSISTANT
        if role != expected:
            detail = ("a system message may only come first" if role == SYSTEM
                      else f"expected {'an assistant' if expected == ASSISTANT else 'a user'} "
                           "message")
            raise RecordError(f"bad role sequence at message {position + 1}: got {role}; "
                              f"{detail} (user and assistant must alternate, user first)")
    return start


def expand_conversation(messages: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """One canonical record per assistant message of a linear conversation.

    ``messages`` are (canonical role, text) pairs. An optional system message may come first;
    then user and assistant messages must alternate, starting with the user. A final user
    message without an answer adds no record (it has no target).
    """
    start = check_role_sequence([role for role, _ in messages])
    system = messages[0][1] if start else ""
    history: list[tuple[str, str]] = []
    records = []
    for position in range(start, len(messages)):
        role, text = messages[position]
        if role == ASSISTANT:
            records.append({"dialog": render_dialog(history), "response": text,
                            "turn": len(records) + 1, "system": system})
        history.append((role, text))
    if not records:
        raise RecordError("conversation has no assistant turn, so nothing to learn from it")
    return records


def sharegpt(raw: Mapping[str, Any]) -> list[dict[str, Any]]:
    """ShareGPT: ``{"conversations": [{"from": "human"|"gpt"|"system", "value": ...}, ...]}``."""
    raw = _require_mapping(raw)
    conversation = raw.get("conversations")
    if not isinstance(conversation, list):
        raise RecordError("missing list field 'conversations' "
                          f"(the record has fields {_keys(raw)})")
    messages = [_message(m, n, _SHAREGPT_ROLES, ("from", "role"), ("value", "content"))
                for n, m in enumerate(conversation, start=1)]
    return expand_conversation(messages)


def oasst(raw: Mapping[str, Any]) -> list[dict[str, Any]]:
    """OpenAssistant conversations, as a thread or as a message tree.

    - thread: ``{"messages": [{"role": "prompter"|"assistant"|"system", "text": ...}, ...]}``
      (``content`` is accepted for ``text``);
    - tree (``*.trees.jsonl`` export): ``{"prompt": {"role": "prompter", "text": ...,
      "replies": [...]}}`` -> one record per assistant message anywhere in the tree, with the
      path from the root as its dialog.
    """
    raw = _require_mapping(raw)
    if "messages" in raw:
        thread = raw["messages"]
        if not isinstance(thread, list):
            raise RecordError("field 'messages' must be a list of messages")
        messages = [_message(m, n, _OASST_ROLES, ("role",), ("text", "content"))
                    for n, m in enumerate(thread, start=1)]
        return expand_conversation(messages)
    if "prompt" in raw:
        records: list[dict[str, Any]] = []
        _walk_tree(raw["prompt"], [], "prompt", records)
        if not records:
            raise RecordError("message tree has no assistant reply, so nothing to learn from it")
        return records
    raise RecordError("expected an OpenAssistant thread ('messages' list) or message tree "
                      f"('prompt' object); the record has fields {_keys(raw)}")


def tree_node(node: Any, depth: int, where: str) -> tuple[str, str, list]:
    """(role, text, replies) of an OpenAssistant tree node ``depth`` messages below the root,
    checked: prompter and assistant alternate from the root, replies are a list."""
    try:
        role, text = _message(node, depth + 1, _OASST_ROLES, ("role",), ("text", "content"))
    except RecordError as err:
        raise RecordError(f"{where}: {err}") from None
    expected = USER if depth % 2 == 0 else ASSISTANT
    if role != expected:
        raise RecordError(f"{where}: bad role sequence at depth {depth + 1}: got {role}, "
                          f"expected {expected} (prompter and assistant must alternate)")
    replies = node.get("replies", [])
    if not isinstance(replies, list):
        raise RecordError(f"{where}: 'replies' must be a list")
    return role, text, replies


def _walk_tree(node: Any, path: list[tuple[str, str]], where: str,
               records: list[dict[str, Any]]) -> None:
    """Depth-first: add a record for every assistant node below ``node``."""
    role, text, replies = tree_node(node, len(path), where)
    if role == ASSISTANT:
        records.append({"dialog": render_dialog(path), "response": text,
                        "turn": len(path) // 2 + 1, "system": ""})
    for i, reply in enumerate(replies):
        _walk_tree(reply, [*path, (role, text)], f"{where}.replies[{i}]", records)


for _name, _fn in [("alpaca", alpaca), ("dolly", dolly), ("self_instruct", self_instruct),
                   ("prompt_completion", prompt_completion), ("sharegpt", sharegpt),
                   ("oasst", oasst)]:
    register_format(_name, _fn)
