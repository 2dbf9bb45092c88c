"""Turning generations back into instructions, yes/no answers and instances.

Parsing never raises: whatever a model writes becomes candidates (each later kept or rejected
with a reason) or nothing. A generation cut by the length limit (``truncated``) loses its last,
unfinished item; items before it ended where the next one began, so they are whole.
"""

from __future__ import annotations

import dataclasses
import re

from flantune.selfinstruct.seeds import Instance

# The model went on to write the next few-shot block: what follows is not this task's.
_NEXT_TASK = re.compile(r"(?:^|\n)\s*Task\s*:")
_EXAMPLE = re.compile(r"(?:^|\n)\s*Example\s*\d*\s*[.:]?[ \t]*(?=\n|$)")
_OUTPUT = re.compile(r"Output\s*\d*\s*:")
_INPUT = re.compile(r"Input\s*\d*\s*:")
_INPUT_PREFIX = re.compile(r"^\s*Input\s*\d*\s*:")
_CLASS_LABEL = re.compile(r"Class label\s*:")


@dataclasses.dataclass(frozen=True)
class ParsedInstruction:
    text: str
    complete: bool  # False: the generation stopped at the length limit inside this item


def _marker(number: int) -> re.Pattern[str]:
    return re.compile(rf"(?:^|\s){number}\s?\.(?=\s|$)")


def parse_instructions(text: str, first_number: int, last_number: int,
                       truncated: bool) -> list[ParsedInstruction]:
    """The numbered items a model wrote after a prompt ending in ``first_number.``: item
    ``first_number`` starts the text, each later item starts at the next number in order.
    A blank line or the marker of ``last_number + 1`` ends the list (the rest is ignored and
    the list is complete even if the generation was truncated)."""
    blank = text.find("\n\n")
    if blank >= 0:
        text, truncated = text[:blank], False
    items: list[str] = []
    rest, number = text, first_number
    while True:
        found = _marker(number + 1).search(rest)
        if found is None:
            items.append(rest)
            break
        items.append(rest[:found.start()])
        rest, number = rest[found.end():], number + 1
        if number > last_number:
            truncated = False
            break
    return [ParsedInstruction(item, complete=not (truncated and index == len(items) - 1))
            for index, item in enumerate(items)]


def parse_is_classification(text: str) -> bool | None:
    """True for an answer starting with "yes", False for "no", None for anything else."""
    words = text.strip().split()
    word = words[0].lower().strip(".,!:;") if words else ""
    return True if word == "yes" else False if word == "no" else None


def _cut_next_task(text: str) -> tuple[str, bool]:
    found = _NEXT_TASK.search(text)
    return (text[:found.start()], True) if found else (text, False)


def _input_output(chunk: str) -> Instance:
    chunk = re.sub(r"^\s*[.:]", "", chunk)  # the rest of "Example 1:" after the prompt
    parts = _OUTPUT.split(chunk, maxsplit=1)
    if len(parts) == 2:
        inst_input, output = parts
    else:
        inst_input, output = "", chunk
    output = _INPUT.split(output, maxsplit=1)[0]  # a second example run together with this one
    inst_input = _INPUT_PREFIX.sub("", inst_input)
    return Instance(inst_input.strip(), output.strip())


def parse_input_first(text: str, truncated: bool) -> list[Instance]:
    """Instances of a generation task, written after a prompt ending in "Example 1": example
    blocks ("Example N" lines) of optional "Input:" and "Output:"."""
    text, ended = _cut_next_task(text)
    chunks = [c for c in _EXAMPLE.split(text) if c.strip()]
    instances = [_input_output(chunk) for chunk in chunks]
    if truncated and not ended:
        instances = instances[:-1]
    return instances


def parse_output_first(text: str, truncated: bool) -> list[Instance]:
    """Instances of a classification task, written after a prompt ending in "Class label:":
    each label on its line, then the input (if any) for it."""
    text, ended = _cut_next_task(text)
    instances = []
    for chunk in _CLASS_LABEL.split(text):
        if not chunk.strip():
            continue
        label, _, inst_input = chunk.strip().partition("\n")
        instances.append(Instance(_INPUT_PREFIX.sub("", inst_input).strip(), label.strip()))
    if truncated and not ended:
        instances = instances[:-1]
    return instances
