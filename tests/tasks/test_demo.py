"""The embedded demo tasks and mixtures."""

from __future__ import annotations

import pytest

import flantune.tasks.demo as demo
from flantune.data import task_shares
from flantune.data.report import mixture_report
from flantune.data.tasks import flan_task_for
from flantune.metrics import cot_answer, normalize_answer

TRAIN_TASKS = [f"rg_{name}" for name in demo.TRAIN_SIZES]
HELDOUT_TASKS = [f"rg_{name}" for name in demo.HELDOUT]


def test_demo_has_enough_tasks_templates_and_heldout_tasks():
    assert len(TRAIN_TASKS) >= 10 and len(HELDOUT_TASKS) >= 3
    for name in TRAIN_TASKS:
        flan_task, _ = flan_task_for(name)
        assert len(flan_task.templates) >= 3, name
    cot = [n for n in TRAIN_TASKS if any(t.cot for t in flan_task_for(n)[0].templates)]
    assert len(cot) >= 4
    assert any(flan_task_for(n)[0].has_options for n in TRAIN_TASKS)


def test_heldout_tasks_never_in_the_training_mixture():
    training = set(task_shares("demo"))
    assert all(any(t.startswith(n + "_") for t in training) for n in TRAIN_TASKS)
    assert not any(t.startswith(tuple(n + "_" for n in HELDOUT_TASKS)) for t in training)
    assert set(task_shares("demo_heldout")) == {f"{n}_zsnoopt" for n in HELDOUT_TASKS}


@pytest.mark.parametrize("name", TRAIN_TASKS + HELDOUT_TASKS)
def test_every_variant_renders_and_targets_carry_the_answer(name):
    flan_task, _ = flan_task_for(name)
    for variant in flan_task.variants:
        for split in ("train", "validation"):
            for index in range(6):
                rendered = flan_task.render(split, index, variant)
                record = flan_task.record(split, index)
                assert rendered["inputs"].strip() and rendered["targets"].strip()
                # The final answer is recoverable from the target (CoT or plain).
                assert normalize_answer(cot_answer(rendered["targets"])) == normalize_answer(
                    record["answer"]), (name, variant, index)


def test_splits_are_different_data():
    flan_task, _ = flan_task_for("rg_chain_sum")
    train = {flan_task.record("train", i)["question"] for i in range(50)}
    validation = {flan_task.record("validation", i)["question"] for i in range(50)}
    assert len(train & validation) < 5


def test_demo_mixture_report_matches_rates():
    report = mixture_report("demo", num_examples=3000, num_rendered=2)
    assert len(report.members) == 28
    for member in report.members:
        assert abs(member.realized_count - 3000 * member.expected_share) <= 5
    # 80 / 20 between the zero-shot and few-shot submixtures.
    few_shot = sum(m.expected_share for m in report.members if m.task.endswith(("fsopt",
                                                                                 "fsnoopt")))
    assert few_shot == pytest.approx(0.2)
    assert len(report.examples) == 2
