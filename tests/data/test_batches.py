"""The resumable batch iterator."""

from __future__ import annotations

import numpy as np
import pytest

import tests.task_fixtures  # noqa: F401
from flantune.data import BatchIterator, DataError, IteratorState

LENGTHS = {"inputs": 48, "targets": 16}


def _iterator(**kwargs) -> BatchIterator:
    options = dict(task_feature_lengths=LENGTHS, batch_size=3, window=40, seed=11)
    options.update(kwargs)
    return BatchIterator("test_mix", **options)


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_same_seed_same_batches_other_seed_other_batches():
    a, b, c = _iterator(), _iterator(), _iterator(seed=12)
    first = [next(a) for _ in range(12)]
    assert all(_equal(x, next(b)) for x in first)
    assert not all(_equal(x, next(c)) for x in first)


@pytest.mark.parametrize("converter", ["enc_dec", "decoder"])
def test_resume_at_several_points_gives_identical_next_batches(converter):
    reference = _iterator(converter=converter)
    states, batches = [], []
    for _ in range(30):
        states.append(reference.get_state().to_json())
        batches.append(next(reference))
    windows = {IteratorState.from_json(s).window for s in states}
    assert len(windows) >= 3  # the run crosses window boundaries
    for start in (0, 1, 7, 16, 29):
        resumed = _iterator(converter=converter)
        resumed.set_state(states[start])
        for expected in batches[start:start + 4]:
            assert _equal(next(resumed), expected)


def test_batches_have_fixed_shapes_and_task_ids():
    iterator = _iterator()
    for _ in range(10):
        batch = next(iterator)
        assert batch["encoder_input_tokens"].shape == (3, 48)
        assert batch["decoder_target_tokens"].shape == (3, 16)
        assert batch["decoder_task_ids"].max() < len(iterator.task_names)
    decoder = _iterator(converter="decoder")
    assert next(decoder)["decoder_target_tokens"].shape == (3, 64)


def test_processes_get_different_batches():
    zero = _iterator(process_index=0, process_count=2)
    one = _iterator(process_index=1, process_count=2)
    assert not _equal(next(zero), next(one))


def test_state_from_another_configuration_is_refused():
    state = _iterator().get_state()
    with pytest.raises(DataError, match="different data configuration"):
        _iterator(seed=99).set_state(state)
    with pytest.raises(DataError, match="different data configuration"):
        _iterator(process_count=2).set_state(state)
    with pytest.raises(DataError, match="Not a flantune data-iterator state"):
        _iterator().set_state("{not json")


def test_truncation_is_counted():
    iterator = _iterator(task_feature_lengths={"inputs": 8, "targets": 4})
    next(iterator)
    assert iterator.stats.truncated.get("inputs", 0) > 0
    assert iterator.stats.examples == 40


def _pretokenized_task(name: str, top_id: int) -> None:
    """A plain SeqIO task tokenized elsewhere, with ids up to `top_id`."""
    import seqio
    import tensorflow as tf

    import flantune

    def dataset(split, shuffle_files=False, seed=None):
        return tf.data.Dataset.from_tensor_slices({
            "inputs": np.array([[5, 6, 7], [8, top_id, 9], [3, 4, 2]], np.int32),
            "targets": np.array([[4, 1]] * 3, np.int32)})

    if name not in seqio.TaskRegistry.names():
        seqio.TaskRegistry.add(name, source=seqio.FunctionDataSource(dataset, splits=["train"]),
                               preprocessors=[],
                               output_features=flantune.data.default_output_features())


def test_token_ids_outside_the_model_vocabulary_are_an_error_naming_the_task():
    _pretokenized_task("test_other_vocabulary", top_id=9123)
    batches = BatchIterator("test_other_vocabulary", task_feature_lengths=LENGTHS, batch_size=2,
                            window=8, vocab_size=8000)
    with pytest.raises(DataError, match=r"task 'test_other_vocabulary': inputs token id 9123"):
        next(batches)
    fine = BatchIterator("test_other_vocabulary", task_feature_lengths=LENGTHS, batch_size=2,
                         window=8, vocab_size=9124)
    assert next(fine)["encoder_input_tokens"].max() == 9123
