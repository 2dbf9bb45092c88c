"""The mixing schedule and the example stream."""

from __future__ import annotations

import numpy as np
import pytest

import tests.task_fixtures  # noqa: F401
from flantune.data import DataError, MixingSchedule
from flantune.data.stream import ExampleStream, FlanTaskExamples
from flantune.data.tasks import flan_task_for

SHARES = [0.5, 0.3, 0.15, 0.05]


@pytest.mark.parametrize("method", ["exact", "random"])
def test_choices_are_random_access(method):
    schedule = MixingSchedule(SHARES, seed=7, method=method)
    whole = schedule.choices(0, 10_000)
    pieces = np.concatenate([schedule.choices(a, b) for a, b in
                             [(0, 13), (13, 4096), (4096, 5000), (5000, 10_000)]])
    np.testing.assert_array_equal(whole, pieces)
    again = MixingSchedule(SHARES, seed=7, method=method).choices(0, 10_000)
    np.testing.assert_array_equal(whole, again)
    other = MixingSchedule(SHARES, seed=8, method=method).choices(0, 10_000)
    assert not np.array_equal(whole, other)


def test_random_mixing_shares_within_statistical_tolerance():
    n = 100_000
    counts = np.bincount(MixingSchedule(SHARES, seed=1, method="random").choices(0, n),
                         minlength=4)
    for count, share in zip(counts, SHARES, strict=True):
        sigma = np.sqrt(n * share * (1 - share))
        assert abs(count - n * share) < 4.5 * sigma


def test_exact_mixing_matches_rates_on_every_prefix():
    choices = MixingSchedule(SHARES, seed=1, method="exact").choices(0, 50_000)
    onehot = np.eye(4)[choices]
    prefix_counts = np.cumsum(onehot, axis=0)
    expected = np.arange(1, len(choices) + 1)[:, None] * np.asarray(SHARES)[None, :]
    # The golden-ratio sequence has O(log n) discrepancy: a few examples at any length.
    assert np.abs(prefix_counts - expected).max() < 5.0


def test_bad_shares_and_method():
    with pytest.raises(DataError):
        MixingSchedule([0.0, 0.0], seed=0)
    with pytest.raises(DataError, match="mixing method"):
        MixingSchedule([1.0], seed=0, method="roundrobin")


def test_processes_read_disjoint_records_within_an_epoch():
    flan_task, variant = flan_task_for("test_reverse_zsnoopt")
    seen = []
    for process in range(2):
        reader = FlanTaskExamples(flan_task, variant, "train", seed=0, process_index=process,
                                  process_count=2)
        seen.append({reader._record_index(k)[0] for k in range(20)})
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(range(40))


def test_epochs_reshuffle_and_rerender():
    flan_task, variant = flan_task_for("test_reverse_zsnoopt")
    reader = FlanTaskExamples(flan_task, variant, "train", seed=0)
    first = [reader._record_index(k) for k in range(40)]
    second = [reader._record_index(k) for k in range(40, 80)]
    assert sorted(i for i, _ in first) == sorted(i for i, _ in second) == list(range(40))
    assert [i for i, _ in first] != [i for i, _ in second]
    assert {e for _, e in first} == {0} and {e for _, e in second} == {1}


def test_stream_windows_equal_one_read():
    stream = ExampleStream("test_mix", seed=2)
    zeros = np.zeros(len(stream.task_names), dtype=np.int64)
    whole, counts = stream.read(0, 300, zeros)
    first, mid = ExampleStream("test_mix", seed=2).read(0, 120, zeros)
    second, end = ExampleStream("test_mix", seed=2).read(120, 300, mid)
    np.testing.assert_array_equal(counts, end)
    for a, b in zip(whole, first + second, strict=True):
        assert a["task_index"] == b["task_index"]
        np.testing.assert_array_equal(a["inputs"], b["inputs"])
        np.testing.assert_array_equal(a["targets"], b["targets"])


def test_bad_process_index():
    with pytest.raises(DataError, match="process_index"):
        ExampleStream("test_mix", process_index=2, process_count=2)
