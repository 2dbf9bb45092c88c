"""Scoring reasoning-gym tasks with the generator's own ``score_answer``.

A SeqIO metric sees only ``(targets, predictions)``; reasoning-gym's scorer needs the item the
answer belongs to. The target postprocessor therefore returns the answer text as a
:class:`RecordTarget`: a ``str`` (so string metrics such as exact match work unchanged) that
also carries the record and the scorer, which flantune's evaluation passes to postprocessors in
the example features (``record``, ``score_answer``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from flantune.metrics import cot_answer


class RecordTarget(str):
    """A target answer that remembers its record and how to score a prediction against it."""

    record: Mapping[str, Any] | None
    scorer: Callable[[str | None, Mapping[str, Any]], float] | None

    def __new__(cls, text: str, record: Mapping[str, Any] | None = None,
                scorer: Callable[[str | None, Mapping[str, Any]], float] | None = None):
        self = super().__new__(cls, text)
        self.record, self.scorer = record, scorer
        return self


def record_target_postprocessor(chain_of_thought: bool = False) -> Callable[..., str]:
    """A SeqIO postprocessor: the answer (after "The answer is" for chain-of-thought outputs);
    targets become :class:`RecordTarget` when the example carries the record and scorer."""

    def postprocess(text: str | bytes, example: Mapping[str, Any] | None = None,
                    is_target: bool = False) -> str:
        answer = cot_answer(text) if chain_of_thought else (
            text.decode("utf-8") if isinstance(text, bytes) else str(text)).strip()
        if is_target and example is not None and "record" in example:
            return RecordTarget(answer, example["record"], example.get("score_answer"))
        return answer

    postprocess.__name__ = "cot_record_target" if chain_of_thought else "record_target"
    return postprocess


def reasoning_gym_score(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    """Mean of the generator's ``score_answer`` (0 to 1 per item) times 100.

    Some generators' scorers raise on answers they cannot parse (e.g. prime_factorization on
    free text); such a prediction scores 0 and is counted in ``rg_unscorable`` (percent of
    predictions), reported only when there are any."""
    if len(targets) != len(predictions):
        raise ValueError(f"reasoning_gym_score: {len(targets)} targets but {len(predictions)} "
                         "predictions.")
    if not targets:
        return {"rg_score": 0.0}
    total, unscorable = 0.0, 0
    for i, (target, prediction) in enumerate(zip(targets, predictions, strict=True)):
        record = getattr(target, "record", None)
        scorer = getattr(target, "scorer", None)
        if record is None or scorer is None:
            raise ValueError(
                f"reasoning_gym_score: target {i} carries no reasoning-gym record; the task's "
                "postprocess_fn must be record_target_postprocessor() and the examples must "
                "come from flantune's evaluation (flantune.evaluation), which passes records.")
        try:
            total += float(scorer(str(prediction), record))
        except Exception:  # noqa: BLE001 - the generator cannot parse this answer: wrong
            unscorable += 1
    scores = {"rg_score": 100.0 * total / len(targets)}
    if unscorable:
        scores["rg_unscorable"] = 100.0 * unscorable / len(targets)
    return scores
