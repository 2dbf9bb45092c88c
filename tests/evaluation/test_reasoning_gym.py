"""reasoning-gym's own scorer as a SeqIO metric, through the demo tasks' postprocessor."""

from __future__ import annotations

import pytest

import flantune.tasks  # noqa: F401
from flantune.evaluation import load_examples
from flantune.evaluation.reasoning_gym import (
    RecordTarget,
    reasoning_gym_score,
    record_target_postprocessor,
)
from flantune.metrics import exact_match


def _targets_and_answers(task: str, count: int = 4):
    examples = load_examples(task, "validation", count)
    postprocess = record_target_postprocessor(chain_of_thought=False)
    targets = [postprocess(ex.targets, example=ex.features(), is_target=True) for ex in examples]
    return examples, targets


def test_correct_answers_score_100_and_wrong_ones_less():
    examples, targets = _targets_and_answers("rg_prime_factorization_zsnoopt")
    assert all(isinstance(t, RecordTarget) and t.record is not None for t in targets)
    answers = [ex.record["answer"] for ex in examples]
    assert reasoning_gym_score(targets, answers) == {"rg_score": pytest.approx(100.0)}
    wrong = reasoning_gym_score(targets, ["7"] * len(targets))["rg_score"]
    assert wrong < 100.0
    # The same targets still work with string metrics.
    assert exact_match(targets, answers) == {"exact_match": 100.0}


def test_answers_the_scorer_cannot_parse_score_zero_and_are_counted():
    examples, targets = _targets_and_answers("rg_prime_factorization_zsnoopt", 2)
    answers = [examples[0].record["answer"], "4.0' trip {192}{2 kinds"]
    assert reasoning_gym_score(targets, answers) == {"rg_score": pytest.approx(50.0),
                                                     "rg_unscorable": pytest.approx(50.0)}


def test_chain_of_thought_outputs_are_scored_on_their_final_answer():
    examples = load_examples("rg_lcm_zsnoopt", "validation", 3)
    postprocess = record_target_postprocessor(chain_of_thought=True)
    targets = [postprocess(ex.targets, example=ex.features(), is_target=True) for ex in examples]
    predictions = [postprocess(f"Some reasoning. The answer is {ex.record['answer']}.",
                               example=ex.features()) for ex in examples]
    assert predictions == [ex.record["answer"] for ex in examples]
    assert reasoning_gym_score(targets, predictions)["rg_score"] == pytest.approx(100.0)


def test_targets_without_records_are_a_clear_error():
    with pytest.raises(ValueError, match="record_target_postprocessor"):
        reasoning_gym_score(["12"], ["12"])
    with pytest.raises(ValueError, match="2 targets but 1 predictions"):
        reasoning_gym_score(["1", "2"], ["1"])
