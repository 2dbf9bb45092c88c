"""A deterministic, resumable iterator of packed per-process numpy batches.

The stream of one process is cut into windows of ``window`` slots. Each window is read, packed
best-fit-decreasing into rows by the feature converter, and its rows shuffled (seeded); batches
take rows in order, across window boundaries. The iterator's state is the window being consumed,
the rows of it already emitted, and the per-task example counts before it: a restored iterator
rebuilds that one window and continues with exactly the batches the original would have given.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from flantune.data.errors import DataError
from flantune.data.feature_converters import (
    ConversionStats,
    DecoderFeatureConverter,
    EncDecFeatureConverter,
)
from flantune.data.seeding import rng_for
from flantune.data.stream import ExampleStream

STATE_VERSION = 1
CONVERTERS = {"enc_dec": EncDecFeatureConverter, "decoder": DecoderFeatureConverter}


def make_converter(kind: str, *, pack: bool = True, **kwargs: Any):
    """The feature converter for a model family: ``"enc_dec"`` or ``"decoder"``."""
    if kind not in CONVERTERS:
        raise DataError(f"Unknown feature converter '{kind}'; use one of {sorted(CONVERTERS)}.")
    return CONVERTERS[kind](pack=pack, **kwargs)


@dataclasses.dataclass
class IteratorState:
    """Where a BatchIterator is: JSON-serializable, stored in checkpoints."""

    window: int = 0
    rows_emitted: int = 0
    counts: list[int] = dataclasses.field(default_factory=list)
    fingerprint: str = ""
    version: int = STATE_VERSION

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> IteratorState:
        try:
            return cls(**json.loads(text))
        except (TypeError, ValueError) as err:
            raise DataError(f"Not a flantune data-iterator state: {err}.") from None


def check_token_ids(examples: list[dict[str, Any]], vocab_size: int,
                    task_names: list[str]) -> None:
    """Raises a DataError naming the task and its largest id if any token id of `examples`
    is outside ``[0, vocab_size)``: such ids index past the embedding table and train as NaN."""
    worst: dict[int, tuple[int, str]] = {}
    for example in examples:
        for feature in ("inputs", "targets", "chosen", "rejected"):
            ids = example.get(feature)
            if ids is None or not len(ids):
                continue
            ids = np.asarray(ids)
            low, high = int(ids.min()), int(ids.max())
            bad = high if high >= vocab_size else low if low < 0 else None
            if bad is not None:
                task = example["task_index"]
                if task not in worst or abs(bad) > abs(worst[task][0]):
                    worst[task] = (bad, feature)
    if worst:
        lines = [f"task '{task_names[t]}': {feature} token id {bad}"
                 for t, (bad, feature) in sorted(worst.items())]
        raise DataError(
            f"Token ids outside the model's vocabulary [0, {vocab_size}): " + "; ".join(lines)
            + ". The task was tokenized with another vocabulary than the model's: give it the "
            "model's vocabulary (flantune.vocabulary.path), or set the model config's "
            "vocab_size to cover it.")


class BatchIterator(Iterator[dict[str, np.ndarray]]):
    """Packed batches of ``batch_size`` rows for one process of a mixture's stream.

    Args:
      mixture_or_task: a registered seqio task or mixture name.
      task_feature_lengths: e.g. ``{"inputs": 512, "targets": 128}``.
      batch_size: rows per batch *for this process*.
      converter: ``"enc_dec"``, ``"decoder"`` or a converter object.
      window: slots packed together (a larger window packs tighter; rows come in its order).
      mixing: ``"exact"`` or ``"random"`` (see :mod:`flantune.data.stream`).
      vocab_size: the model's vocabulary size; a token id outside ``[0, vocab_size)`` (a task
        tokenized with another vocabulary) is a DataError naming the task and the id.
    """

    def __init__(self, mixture_or_task: str, *, task_feature_lengths: Mapping[str, int],
                 batch_size: int, converter: Any = "enc_dec", split: str = "train",
                 seed: int = 0, process_index: int = 0, process_count: int = 1,
                 window: int = 4096, mixing: str = "exact", pack: bool = True,
                 vocab_size: int | None = None):
        self._arguments = dict(
            mixture_or_task=mixture_or_task, task_feature_lengths=task_feature_lengths,
            batch_size=batch_size, converter=converter, split=split, seed=seed,
            process_index=process_index, process_count=process_count, window=window,
            mixing=mixing, pack=pack, vocab_size=vocab_size)
        if batch_size <= 0 or window <= 0:
            raise DataError(f"batch_size and window must be positive, got {batch_size}, {window}.")
        self.stream = ExampleStream(mixture_or_task, split=split, seed=seed,
                                    process_index=process_index, process_count=process_count,
                                    mixing=mixing)
        self.converter = make_converter(converter, pack=pack, eos_id=self._eos_id()) \
            if isinstance(converter, str) else converter
        self.task_feature_lengths = dict(task_feature_lengths)
        self.batch_size, self.window, self.seed = batch_size, window, seed
        self.vocab_size = vocab_size
        self.stats = ConversionStats()  # packing and truncation counts of the windows read
        self._fingerprint = self._make_fingerprint(mixing, pack)
        self._state = IteratorState(counts=[0] * len(self.stream.task_names),
                                    fingerprint=self._fingerprint)
        self._rows: dict[str, np.ndarray] | None = None  # rows of the current window

    def _eos_id(self) -> int:
        """The EOS id a truncated feature ends with: the tasks' vocabulary's (SentencePiece
        vocabularies have 1; a Hugging Face tokenizer its own), which must be the same for all."""
        import seqio

        ids = set()
        for name in self.stream.task_names:
            feature = seqio.get_mixture_or_task(name).output_features.get("targets")
            eos = None if feature is None else feature.vocabulary.eos_id
            if eos is not None:
                ids.add(int(eos))
        if len(ids) > 1:
            raise DataError(f"The tasks of '{self.stream.name}' use vocabularies with different "
                            f"EOS ids {sorted(ids)}; one model trains on one vocabulary.")
        return ids.pop() if ids else 1

    @property
    def task_names(self) -> list[str]:
        return self.stream.task_names

    def _make_fingerprint(self, mixing: str, pack: bool) -> str:
        what = [self.stream.name, self.stream.task_names, np.round(self.stream.shares, 12).tolist(),
                self.stream.split, self.seed, self.stream.process_index,
                self.stream.process_count, self.window, mixing, pack,
                sorted(self.task_feature_lengths.items()), type(self.converter).__name__]
        return hashlib.sha256(json.dumps(what, default=str).encode()).hexdigest()[:16]

    @property
    def fingerprint(self) -> str:
        """A digest of the data configuration (what a saved state must belong to)."""
        return self._fingerprint

    def fork(self) -> BatchIterator:
        """A second iterator of the same configuration at this one's position (it gives the
        batches this one will give; the two advance separately)."""
        arguments = dict(self._arguments)
        if not isinstance(arguments["converter"], str):
            arguments["converter"] = self.converter
        other = BatchIterator(**arguments)
        other.set_state(self.get_state())
        return other

    def model_feature_lengths(self) -> dict[str, int]:
        return self.converter.model_feature_lengths(self.task_feature_lengths)

    # -- state ----------------------------------------------------------------------------
    def get_state(self) -> IteratorState:
        return dataclasses.replace(self._state, counts=list(self._state.counts))

    def set_state(self, state: IteratorState | str | bytes) -> None:
        if not isinstance(state, IteratorState):
            state = IteratorState.from_json(state)
        if state.version != STATE_VERSION:
            raise DataError(f"Data-iterator state version {state.version} is not supported "
                            f"(this flantune writes version {STATE_VERSION}).")
        if state.fingerprint != self._fingerprint:
            raise DataError(
                "The saved data-iterator state belongs to a different data configuration "
                "(mixture, rates, seed, split, process count, window, feature lengths or "
                "converter changed). Resume with the original configuration, or start the data "
                "stream afresh in a new MODEL_DIR.")
        self._state = dataclasses.replace(state, counts=list(state.counts))
        self._rows = None

    # -- iteration ------------------------------------------------------------------------
    def _load_window(self) -> None:
        start = self._state.window * self.window
        counts = np.asarray(self._state.counts, dtype=np.int64)
        examples, self._counts_after = self.stream.read(start, start + self.window, counts)
        if self.vocab_size is not None:
            check_token_ids(examples, self.vocab_size, self.stream.task_names)
        rows, stats = self.converter.convert(examples, self.task_feature_lengths)
        self.stats = self.stats.merge(stats)
        num_rows = len(next(iter(rows.values())))
        if num_rows == 0:  # every example left out: reading on would never yield a batch
            raise DataError(
                f"A window of {len(examples)} examples of '{self.stream.name}' gave no rows: "
                f"{stats.truncation_summary() or 'every example was left out'}")
        order = rng_for(self.seed, "rows", self.stream.process_index,
                        self.stream.process_count, self._state.window).permutation(num_rows)
        self._rows = {name: array[order] for name, array in rows.items()}
        self._num_rows = num_rows

    def __iter__(self) -> BatchIterator:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        parts: list[dict[str, np.ndarray]] = []
        needed = self.batch_size
        while needed:
            if self._rows is None:
                self._load_window()
            begin = self._state.rows_emitted
            take = min(needed, self._num_rows - begin)
            parts.append({k: v[begin:begin + take] for k, v in self._rows.items()})
            needed -= take
            self._state.rows_emitted += take
            if self._state.rows_emitted == self._num_rows:
                self._state = dataclasses.replace(
                    self._state, window=self._state.window + 1, rows_emitted=0,
                    counts=[int(c) for c in self._counts_after])
                self._rows = None
        if len(parts) == 1:
            return parts[0]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
