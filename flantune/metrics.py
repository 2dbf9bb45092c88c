"""Postprocessors and metric functions in SeqIO's conventions, for task definitions.

Metric functions take ``(targets, predictions)`` lists and return ``{name: value}``, as
``seqio.Task(metric_fns=...)`` expects; postprocessors take ``(text, example=None,
is_target=False)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from flantune.data.templates import extract_cot_answer


def normalize_answer(text: str) -> str:
    """Case- and whitespace-insensitive form of a short answer (trailing full stop dropped)."""
    text = " ".join(str(text).split()).lower()
    return text[:-1] if text.endswith(".") else text


def cot_answer(text: str, example: Mapping[str, Any] | None = None, is_target: bool = False
               ) -> str:
    """The final answer of a chain-of-thought output ("... The answer is X."), else the text."""
    del example, is_target
    text = text.decode("utf-8") if isinstance(text, bytes) else text
    answer = extract_cot_answer(text)
    return (answer if answer is not None else text).strip()


def exact_match(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    """Percentage of predictions equal to their target after :func:`normalize_answer`."""
    if len(targets) != len(predictions):
        raise ValueError(f"exact_match: {len(targets)} targets but {len(predictions)} predictions.")
    if not targets:
        return {"exact_match": 0.0}
    hits = sum(normalize_answer(t) == normalize_answer(p) for t, p in zip(targets, predictions,
                                                                          strict=True))
    return {"exact_match": 100.0 * hits / len(targets)}
