"""Background prefetching keeps batches and their states in order."""

from __future__ import annotations

import numpy as np
import pytest

import tests.task_fixtures  # noqa: F401
from flantune.data import BatchIterator, DataError
from flantune.data.prefetch import Prefetcher


def _iterator(**kwargs):
    return BatchIterator("test_mix", task_feature_lengths={"inputs": 48, "targets": 16},
                         batch_size=3, window=40, **kwargs)


def test_prefetched_batches_and_states_match_the_plain_iterator():
    plain = _iterator()
    expected = []
    for _ in range(15):
        batch = next(plain)
        expected.append((batch, plain.get_state().to_json()))
    with Prefetcher(_iterator(), buffer_size=3) as prefetched:
        for want_batch, want_state in expected:
            batch, state = next(prefetched)
            assert state == want_state
            assert all(np.array_equal(batch[k], want_batch[k]) for k in want_batch)
    # A state taken from a prefetched item resumes right after that item.
    resumed = _iterator()
    resumed.set_state(expected[6][1])
    batch = next(resumed)
    assert all(np.array_equal(batch[k], expected[7][0][k]) for k in expected[7][0])


def test_errors_in_the_data_thread_reach_the_consumer():
    class Broken:
        def __next__(self):
            raise DataError("record 3 of task 'x' is bad")

    prefetcher = Prefetcher(Broken())
    with pytest.raises(DataError, match="record 3 of task 'x'"):
        next(prefetcher)
