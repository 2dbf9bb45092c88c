"""Mixtures: rates, nesting, exact shares, plain seqio tasks inside flantune mixtures."""

from __future__ import annotations

import numpy as np
import pytest
import seqio

import flantune
import tests.task_fixtures  # noqa: F401
from flantune.data import BatchIterator, DataError, UnknownNameError, task_shares
from flantune.data.mixtures import examples_proportional, get_provider
from flantune.data.stream import ExampleStream


def test_examples_proportional_caps_then_applies_temperature():
    task = seqio.TaskRegistry.get("test_even_zsopt")  # 60 train records
    assert examples_proportional()(task) == 60
    assert examples_proportional(cap=50)(task) == 50
    assert examples_proportional(cap=50, temperature=2.0)(task) == pytest.approx(50 ** 0.5)
    with pytest.raises(DataError, match="cap must be positive"):
        examples_proportional(cap=0)


def test_task_shares_of_a_flat_mixture_are_hand_computed_rates():
    shares = task_shares("test_mix")
    # reverse: 40 records (cap 50) twice; even_zsopt: 60 -> capped 50; even_zsnoopt: 10.
    rates = {"test_even_zsnoopt": 10.0, "test_even_zsopt": 50.0, "test_reverse_fsnoopt": 40.0,
             "test_reverse_zsnoopt": 40.0}
    total = sum(rates.values())
    assert shares == pytest.approx({k: v / total for k, v in rates.items()})
    assert list(shares) == sorted(shares)


def test_nested_mixture_scales_submixture_by_its_weight():
    shares = task_shares("test_nested")
    assert shares["test_plain_seqio"] == pytest.approx(0.25)
    inner = task_shares("test_mix")
    for name, share in inner.items():
        assert shares[name] == pytest.approx(0.75 * share)


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UnknownNameError, match="test_reverse"):
        get_provider("test_revers")


def test_member_errors():
    with pytest.raises(UnknownNameError):
        flantune.data.register_mixture("test_bad_member", [("no_such_task", 1.0)])
    with pytest.raises(DataError, match="no rate"):
        flantune.data.register_mixture("test_no_rate", ["test_reverse"])
    with pytest.raises(DataError, match="rate 0"):
        flantune.data.register_mixture("test_zero", [("test_reverse", 0.0)])


def test_plain_seqio_task_in_a_flantune_mixture_yields_seqio_tokens():
    stream = ExampleStream("test_nested", seed=5)
    plain_id = stream.task_names.index("test_plain_seqio")
    examples, counts = stream.read(0, 400, np.zeros(len(stream.task_names), dtype=np.int64))
    plain = [e for e in examples if e["task_index"] == plain_id]
    assert len(plain) == counts[plain_id]
    assert abs(len(plain) - 100) <= 2  # 25% of 400, to within the schedule's discrepancy
    task = seqio.TaskRegistry.get("test_plain_seqio")
    reference = task.get_dataset(sequence_length=None, split="train", shuffle=True, seed=5,
                                 num_epochs=None, shard_info=seqio.ShardInfo(0, 1))
    expected = [ex for _, ex in zip(range(len(plain)), reference.as_numpy_iterator(),
                                    strict=False)]
    for ours, theirs in zip(plain, expected, strict=True):
        assert ours["inputs"].tolist() == theirs["inputs"].tolist()
        assert ours["targets"].tolist() == theirs["targets"].tolist()
    # ...and packs into batches like any other member.
    iterator = BatchIterator("test_nested", task_feature_lengths={"inputs": 32, "targets": 16},
                             batch_size=4, window=64)
    batch = next(iterator)
    assert batch["encoder_input_tokens"].shape == (4, 32)
