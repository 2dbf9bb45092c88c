"""The @flantune.task decorator: registration, seqio parity, errors."""

from __future__ import annotations

import numpy as np
import pytest
import seqio

import flantune
import tests.task_fixtures  # noqa: F401  (registers the test tasks)
from flantune.data import DataError, RecordError, Template, TemplateError, Variant
from flantune.data.stream import FlanTaskExamples
from flantune.data.tasks import flan_task_for


def test_decorator_registers_every_variant_as_a_seqio_task():
    names = set(seqio.TaskRegistry.names())
    assert {"test_reverse", "test_reverse_zsnoopt", "test_reverse_fsnoopt"} <= names
    assert "test_reverse_zsopt" not in names  # no options -> no options variants
    assert {"test_even_zsopt", "test_even_zsnoopt", "test_even_fsopt",
            "test_even_fsnoopt"} <= names
    flan_task, variant = flan_task_for("test_even")
    assert variant is Variant.ZS_OPT  # the plain name is zero-shot, with options when present
    assert flan_task_for("test_plain_seqio") is None
    assert isinstance(seqio.get_mixture_or_task("test_reverse_fsnoopt"), seqio.Task)


def test_seqio_pipeline_and_fast_path_give_identical_tokens():
    task = seqio.get_mixture_or_task("test_even_fsopt")
    dataset = task.get_dataset(sequence_length=None, split="validation", shuffle=False)
    via_seqio = [ex for ex in dataset.as_numpy_iterator()]
    flan_task, variant = flan_task_for("test_even_fsopt")
    reader = FlanTaskExamples(flan_task, variant, "validation", seed=0)
    vocab = task.output_features["inputs"].vocabulary
    assert len(via_seqio) == flan_task.num_records("validation") == 60
    for index, example in enumerate(via_seqio):
        rendered = flan_task.render("validation", index, variant,
                                    length_fn=lambda s: len(vocab.encode(s)))
        assert example["inputs_pretokenized"].decode() == rendered["inputs"]
        assert example["inputs"].tolist() == vocab.encode(rendered["inputs"]) + [1]
        assert example["targets"].tolist() == vocab.encode(rendered["targets"]) + [1]
    # The fast reader tokenizes exactly like seqio (epoch 0 of its own seeded order).
    fast = reader.get_many(range(5))
    for k, example in enumerate(fast):
        index, epoch = reader._record_index(k)
        assert epoch == 0
        assert example["inputs"].tolist() == via_seqio[index]["inputs"].tolist()


def test_generator_task_and_list_task_read_by_index():
    reverse, _ = flan_task_for("test_reverse")
    assert reverse.num_records("train") == 40
    assert reverse.record("train", 3) == {"word": "cloud3", "reversed": "3duolc"}
    even, _ = flan_task_for("test_even")
    assert even.record("validation", 1)["number"] == "1001"


def test_few_shot_never_contains_the_example_itself():
    flan_task, _ = flan_task_for("test_reverse")
    for index in range(flan_task.num_records("train")):
        rendered = flan_task.render("train", index, Variant.FS_NOOPT)
        word = flan_task.record("train", index)["word"]
        assert rendered["num_exemplars"] >= 1
        # The word appears once: in the query, never in an exemplar.
        assert rendered["inputs"].count(word) == 1
        assert rendered["inputs"].index(word) > rendered["inputs"].rindex("\n\n")  # the query


def test_rendering_is_deterministic_and_spreads_over_templates():
    flan_task, _ = flan_task_for("test_even")
    first = [flan_task.render("train", i, Variant.ZS_OPT) for i in range(40)]
    again = [flan_task.render("train", i, Variant.ZS_OPT) for i in range(40)]
    assert first == again
    assert len({r["template"] for r in first}) == 2  # even_short does not accept options
    assert all("yes" in r["inputs"] and "no" in r["inputs"] for r in first)


def test_unknown_split_names_the_task_and_its_splits():
    flan_task, _ = flan_task_for("test_reverse")
    with pytest.raises(DataError, match=r"Task 'test_reverse' has no split 'test'.*train"):
        flan_task.source("test")


def test_invalid_and_duplicate_task_names():
    with pytest.raises(DataError, match="not valid"):
        flantune.task("bad name!", templates=[Template("{a}", "{b}")])(lambda split: [])

    def other(split):
        return []

    with pytest.raises(DataError, match="already registered"):
        flantune.task("test_reverse", templates=[Template("{a}", "{b}")])(other)


def test_missing_template_field_names_task_field_and_record():
    @flantune.task("test_missing_field", templates=[Template("{question}", "{answer}")],
                   few_shot=None)
    def records(split):
        return [{"question": "q1", "answer": "a1"}, {"question": "q2"}]

    records.render("train", 0, Variant.ZS_NOOPT)
    with pytest.raises(TemplateError) as err:
        records.render("train", 1, Variant.ZS_NOOPT)
    message = str(err.value)
    assert "test_missing_field" in message and "answer" in message and "item 1" in message


def test_record_fn_errors_name_the_task_and_location():
    def broken(record):
        return {"x": record["missing"]}

    @flantune.task("test_broken_record_fn", templates=[Template("{x}", "{x}")],
                   record_fn=broken, few_shot=None)
    def records(split):
        return [{"a": 1}]

    with pytest.raises(RecordError, match=r"test_broken_record_fn.*item 0.*KeyError"):
        records.render("train", 0, Variant.ZS_NOOPT)


def test_seqio_tf_pipeline_shards_are_disjoint():
    task = seqio.get_mixture_or_task("test_reverse_zsnoopt")
    shards = []
    for index in range(2):
        ds = task.get_dataset(sequence_length=None, split="train", shuffle=True, seed=3,
                              shard_info=seqio.ShardInfo(index, 2))
        shards.append([ex["targets"].tobytes() for ex in ds.as_numpy_iterator()])
    assert len(shards[0]) == len(shards[1]) == 20
    assert not set(shards[0]) & set(shards[1])
    assert np.all([len(s) > 0 for s in shards[0]])
