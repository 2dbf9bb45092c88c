"""Preference pairs of the demo, built offline from its reasoning-gym tasks.

``dpo_reasoning``: pair k asks a question of one demo task (the twelve taken in turn) as a chat
user turn, rendered zero-shot by the task's own templates, exactly as ``chat_reasoning`` asks
it; the chosen reply is its target (the gold answer), the rejected one the same text with its
final answer replaced by the answer of a later record of the same task that the generator's own
``score_answer`` scores below 1 for this question (a wrong answer in the same form).
``dpo_example`` reads the shipped TRL-style file ``tasks/examples/preference_style.jsonl``
(prompt / chosen / rejected strings and message lists).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import flantune
from flantune.data import IterableSource
from flantune.data.tasks import flan_task_for
from flantune.data.variants import Variant

from .demo import TRAIN_SIZES
from .examples import DATA_DIR, split_file

PAIRS = {"train": 3000, "validation": 120}
# Later records tried for a wrong answer (most tasks' first candidate already is one).
CANDIDATES = 20


def wrong_answer(flan_task, split: str, index: int) -> str | None:
    """The answer of the first later record that the task's scorer rates below 1 for record
    ``index`` (None when none of the candidates is wrong)."""
    source, record = flan_task.source(split), flan_task.record(split, index)
    size = flan_task.num_records(split)
    for offset in range(1, CANDIDATES + 1):
        other = flan_task.record(split, (index + offset) % size)["answer"]
        if other.strip() != record["answer"].strip() and source.score_answer(other,
                                                                             record) < 1.0:
            return other
    return None


def replace_last(text: str, old: str, new: str) -> str:
    """``text`` with its last ``old`` (the stated final answer) replaced by ``new``."""
    head, _, tail = text.rpartition(old)
    return head + new + tail


def reasoning_pairs(split: str) -> Iterator[dict[str, Any]]:
    """Pair k: question k // 12 of the (k % 12)-th demo task; the chosen reply is the rendered
    target, the rejected one the same text with its last statement of the gold answer replaced
    by a wrong one (records whose target does not contain their answer verbatim, or with no
    wrong candidate, are skipped)."""
    names = sorted(TRAIN_SIZES)
    made = k = 0
    while made < PAIRS[split]:
        flan_task, _ = flan_task_for(f"rg_{names[k % len(names)]}")
        index = (k // len(names)) % flan_task.num_records(split)
        k += 1
        rendered = flan_task.render(split, index, Variant.ZS_NOOPT)
        gold = flan_task.record(split, index)["answer"]
        wrong = wrong_answer(flan_task, split, index)
        if wrong is None or gold not in rendered["targets"]:
            continue
        made += 1
        yield {"prompt": [{"role": "user", "content": rendered["inputs"]}],
               "chosen": [{"role": "assistant", "content": rendered["targets"]}],
               "rejected": [{"role": "assistant",
                             "content": replace_last(rendered["targets"], gold, wrong)}]}


@flantune.preference_task("dpo_reasoning")
def dpo_reasoning(split):
    """Gold over wrong answers to the demo's reasoning questions, as chat turns."""
    return IterableSource(lambda: reasoning_pairs(split), name=f"dpo_reasoning:{split}",
                          format="preference", task="dpo_reasoning")


@flantune.preference_task("dpo_example")
def dpo_example(split):
    """TRL-style example pairs (strings and message lists)."""
    return split_file(DATA_DIR / "preference_style.jsonl", split, format="preference",
                      task="dpo_example")
