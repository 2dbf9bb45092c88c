"""Chat tasks of the demo: whole conversations in the chat template, for decoder-only models.

- ``chat_sharegpt``, ``chat_dolly``, ``chat_alpaca``: the shipped example files
  (``tasks/examples/``) as conversations (Dolly and Alpaca records are one-turn conversations);
- ``chat_reasoning``: multi-turn conversations built from the demo's reasoning-gym tasks, each
  a few questions of one task asked in a row, answered turn by turn.

The mixture ``demo_chat`` mixes them examples-proportionally. The template is the configured
one (gin ``flantune.chat_template.name``; ``gin_configs/runs/demo_chat.gin`` chooses Llama-2's).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import flantune
from flantune.data import IterableSource
from flantune.data.tasks import flan_task_for
from flantune.data.variants import Variant
from flantune.metrics import exact_match

from .demo import TRAIN_SIZES
from .examples import DATA_DIR, split_file

TURNS = 3
CONVERSATIONS = {"train": 3000, "validation": 60}


@flantune.chat_task("chat_sharegpt", metric_fns=[exact_match])
def chat_sharegpt(split):
    """ShareGPT-style example conversations, whole."""
    return split_file(DATA_DIR / "sharegpt_style.jsonl", split, format="sharegpt_messages",
                      task="chat_sharegpt")


@flantune.chat_task("chat_dolly", metric_fns=[exact_match])
def chat_dolly(split):
    """Dolly-style example records as one-turn conversations."""
    return split_file(DATA_DIR / "dolly_style.jsonl", split, format="dolly_messages",
                      task="chat_dolly")


@flantune.chat_task("chat_alpaca", metric_fns=[exact_match])
def chat_alpaca(split):
    """Alpaca-style example records as one-turn conversations."""
    return split_file(DATA_DIR / "alpaca_style.jsonl", split, format="alpaca_messages",
                      task="chat_alpaca")


def reasoning_conversations(split: str) -> Iterator[dict[str, Any]]:
    """Conversation k asks TURNS consecutive questions of one demo task (the tasks taken in
    turn), each rendered zero-shot by the task's own templates."""
    names = sorted(TRAIN_SIZES)
    source_split = "train" if split == "train" else "validation"
    for k in range(CONVERSATIONS[split]):
        flan_task, _ = flan_task_for(f"rg_{names[k % len(names)]}")
        first = (k // len(names)) * TURNS
        messages = []
        for turn in range(TURNS):
            index = (first + turn) % flan_task.num_records(source_split)
            rendered = flan_task.render(source_split, index, Variant.ZS_NOOPT)
            messages += [{"role": "user", "content": rendered["inputs"]},
                         {"role": "assistant", "content": rendered["targets"]}]
        yield {"messages": messages}


@flantune.chat_task("chat_reasoning", metric_fns=[exact_match])
def chat_reasoning(split):
    """Multi-turn conversations of the demo's reasoning tasks."""
    return IterableSource(lambda: reasoning_conversations(split), name=f"chat_reasoning:{split}",
                          format="messages", task="chat_reasoning")


@flantune.mixture("demo_chat", default_rate=flantune.examples_proportional())
def demo_chat():
    """The demo's conversations: reasoning dialogues and the example files."""
    return ["chat_reasoning", "chat_sharegpt", "chat_dolly", "chat_alpaca"]
