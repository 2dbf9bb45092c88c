"""Random conversations for the chat tests and the benchmark: system prompts, 1-4 turns,
contents with surrounding spaces and newlines, drawn from a fixed text pool by seed."""

from __future__ import annotations

import numpy as np

POOL = ["Hello!", "What is 12 plus 30?", "It is 42.", "  padded with spaces  ",
        "Line one\nLine two", "Reverse 'lantern'.", "nretnal", "Don't panic; it's fine!",
        "é ü 你好 🙂", "Give me three colours.", "Red, green and blue.", "Why?", "Because.",
        "tab\tseparated", "Answer: yes", "A spinach and feta omelette."]


def random_conversations(n: int, *, seed: int = 0, system: bool = True,
                         end_with_user: bool = False) -> list[list[dict[str, str]]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        messages = []
        if system and rng.random() < 0.5:
            messages.append({"role": "system", "content": str(rng.choice(POOL))})
        for _ in range(int(rng.integers(1, 5))):
            for role in ("user", "assistant"):
                parts = rng.choice(POOL, size=int(rng.integers(1, 3)))
                messages.append({"role": role, "content": " ".join(str(p) for p in parts)})
        if end_with_user:
            messages.append({"role": "user", "content": str(rng.choice(POOL))})
        out.append(messages)
    return out
