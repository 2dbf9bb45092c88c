"""The example instruction tasks read from the shipped JSONL files."""

from __future__ import annotations

import pytest

import flantune.tasks.examples  # noqa: F401
from flantune.data import BatchIterator
from flantune.data.tasks import flan_task_for


@pytest.mark.parametrize("name", ["example_alpaca", "example_dolly", "example_sharegpt"])
def test_every_record_renders_in_both_splits(name):
    flan_task, _ = flan_task_for(name)
    train, validation = flan_task.num_records("train"), flan_task.num_records("validation")
    assert train > 20 and validation > 5
    for split, count in (("train", train), ("validation", validation)):
        for index in range(count):
            for variant in flan_task.variants:
                rendered = flan_task.render(split, index, variant)
                assert rendered["inputs"].strip() and rendered["targets"].strip()


def test_conversation_turns_become_separate_examples_with_history():
    flan_task, _ = flan_task_for("example_sharegpt")
    records = [flan_task.record("train", i) for i in range(flan_task.num_records("train"))]
    later_turns = [r for r in records if r["turn"] > 1]
    assert later_turns
    for record in later_turns:
        assert record["dialog"].count("Assistant:") >= record["turn"] - 1


def test_example_mixture_packs_into_batches():
    iterator = BatchIterator("example_instructions", batch_size=4, window=128,
                             task_feature_lengths={"inputs": 512, "targets": 128},
                             converter="decoder")
    batch = next(iterator)
    assert batch["decoder_target_tokens"].shape == (4, 640)
    assert batch["decoder_loss_weights"].sum() > 0
