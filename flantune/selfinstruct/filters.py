"""The Self-Instruct filters: pure functions, each returning ``None`` (keep) or a reason code.

Instruction filters run in the order of :data:`INSTRUCTION_FILTERS`; the first reason found is
the one counted. Novelty (ROUGE-L against the pool) runs after them
(:mod:`flantune.selfinstruct.novelty`). Instance filters follow the paper's release: empty
outputs, input equal to output, and fields ending in ":" (an unfinished generation) are
dropped; duplicates are dropped; a task whose instances give one input different outputs is
dropped whole.
"""

from __future__ import annotations

import dataclasses
import re
import string
from collections.abc import Callable, Sequence

from flantune.selfinstruct.seeds import Instance

# Tasks a text model cannot do (the paper's list).
DEFAULT_BLACKLIST = ("image", "images", "graph", "graphs", "picture", "pictures", "file",
                     "files", "map", "maps", "draw", "plot", "go to")


@dataclasses.dataclass(frozen=True)
class FilterConfig:
    """Thresholds of the instruction filters (defaults: the paper's)."""

    min_words: int = 4
    max_words: int = 150
    blacklist: tuple[str, ...] = DEFAULT_BLACKLIST
    banned_prefixes: tuple[str, ...] = ("Write a program",)

    def __post_init__(self) -> None:
        # gin binds lists; str.startswith and hashing need tuples.
        object.__setattr__(self, "blacklist", tuple(self.blacklist))
        object.__setattr__(self, "banned_prefixes", tuple(self.banned_prefixes))
        if not 1 <= self.min_words <= self.max_words:
            raise ValueError(f"FilterConfig: need 1 <= min_words ({self.min_words}) <= "
                             f"max_words ({self.max_words}).")


def normalize_instruction(text: str) -> str:
    """One line, single spaces, first letter capitalized (the rest left as written)."""
    text = re.sub(r"\s+", " ", text).strip()
    return text[:1].upper() + text[1:]


def empty(text: str, config: FilterConfig) -> str | None:
    return "empty" if not text else None


def length(text: str, config: FilterConfig) -> str | None:
    words = len(text.split())
    if words < config.min_words:
        return "too_short"
    return "too_long" if words > config.max_words else None


def _word_pattern(words: Sequence[str]) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)


def blacklisted(text: str, config: FilterConfig) -> str | None:
    if config.blacklist and _word_pattern(config.blacklist).search(text):
        return "blacklist"
    return None


def banned_prefix(text: str, config: FilterConfig) -> str | None:
    return "write_a_program" if text.startswith(config.banned_prefixes) else None


def leading_punctuation(text: str, config: FilterConfig) -> str | None:
    return "punctuation" if text[:1] in string.punctuation else None


def non_ascii_start(text: str, config: FilterConfig) -> str | None:
    return "non_ascii" if not text[:1].isascii() else None


InstructionFilter = Callable[[str, FilterConfig], "str | None"]
INSTRUCTION_FILTERS: tuple[InstructionFilter, ...] = (
    empty, length, blacklisted, banned_prefix, leading_punctuation, non_ascii_start)
INSTRUCTION_REASONS = ("truncated", "empty", "too_short", "too_long", "blacklist",
                       "write_a_program", "punctuation", "non_ascii", "similar")


def instruction_rejection(text: str, complete: bool, config: FilterConfig) -> str | None:
    """The first reason to reject a normalized instruction, or None to keep it (novelty is
    checked separately, against the pool)."""
    if not complete:
        return "truncated"
    for check in INSTRUCTION_FILTERS:
        reason = check(text, config)
        if reason is not None:
            return reason
    return None


def instance_rejection(instance: Instance) -> str | None:
    """Why one instance is unusable, or None."""
    if not instance.output:
        return "empty_output"
    if instance.input == instance.output:
        return "input_equals_output"
    if instance.input.endswith(":") or instance.output.endswith(":"):
        return "ends_with_colon"
    return None


INSTANCE_REASONS = ("empty_output", "input_equals_output", "ends_with_colon", "duplicate")
TASK_REASONS = ("conflicting_outputs", "no_instances")


@dataclasses.dataclass
class InstanceVerdict:
    kept: list[Instance]
    rejected: dict[str, int]  # instance reason -> count
    task_rejection: str | None  # the task is dropped whole for this reason


def filter_instances(instances: Sequence[Instance]) -> InstanceVerdict:
    """Applies the instance filters in order: invalid ones out, then a non-empty input with
    two different outputs drops the task, then repeats (first one kept, order preserved)."""
    rejected: dict[str, int] = {}
    valid = []
    for instance in instances:
        reason = instance_rejection(instance)
        if reason is None:
            valid.append(instance)
        else:
            rejected[reason] = rejected.get(reason, 0) + 1
    outputs: dict[str, str] = {}
    for instance in valid:
        if instance.input and outputs.setdefault(instance.input, instance.output) \
                != instance.output:
            return InstanceVerdict([], rejected, "conflicting_outputs")
    kept = list(dict.fromkeys(valid))
    if len(kept) < len(valid):
        rejected["duplicate"] = len(valid) - len(kept)
    return InstanceVerdict(kept, rejected, None if kept else "no_instances")
