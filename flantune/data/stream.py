"""The deterministic example stream of a mixture: which task fills each slot, and its example.

Slot ``s`` of process ``p`` (out of ``P``) is given to a task by a seeded schedule over the
mixture's shares; the ``k``-th slot given to a task takes that task's ``k``-th example. Both are
pure functions of (seed, process index, process count, slot), so a stream can start at any slot
given only the per-task counts before it -- which is all a resumed run needs to store.

Two schedules:
- ``"exact"`` (default): a golden-ratio (Kronecker) low-discrepancy sequence through the
  cumulative shares. Every prefix of the stream matches the rates to within a few examples,
  so an ablation that changes a rate changes exactly what it says.
- ``"random"``: i.i.d. draws (what ``tf.data.Dataset.sample_from_datasets`` does), seeded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import seqio
import tensorflow as tf

from flantune.data.chat.encoding import hf_vocabulary
from flantune.data.chat.tasks import ChatTask, chat_task_for
from flantune.data.errors import DataError
from flantune.data.mixtures import get_provider, task_shares
from flantune.data.preference.tasks import PreferenceTask, preference_task_for
from flantune.data.seeding import rng_for
from flantune.data.tasks import FlanTask, flan_task_for, token_length_fn
from flantune.data.variants import Variant
from flantune.data.vocabulary import encode_batch

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
_RANDOM_BLOCK = 4096


class MixingSchedule:
    """Maps slots of one process's stream to task ids, from the tasks' shares."""

    def __init__(self, shares: Sequence[float], *, seed: int, process_index: int = 0,
                 process_count: int = 1, method: str = "exact"):
        if method not in ("exact", "random"):
            raise DataError(f"Unknown mixing method '{method}'; use 'exact' or 'random'.")
        shares = np.asarray(shares, dtype=np.float64)
        if shares.ndim != 1 or len(shares) == 0 or (shares < 0).any() or shares.sum() <= 0:
            raise DataError(f"Mixing shares must be non-negative and not all 0, got {shares}.")
        self.shares = shares / shares.sum()
        self._cdf = np.cumsum(self.shares)
        self._cdf[-1] = 1.0
        self.method = method
        self._key = (seed, "mixing", process_index, process_count)
        self._offset = rng_for(*self._key).random()

    def choices(self, start: int, stop: int) -> np.ndarray:
        """Task ids of slots ``[start, stop)``."""
        slots = np.arange(start, stop, dtype=np.int64)
        if self.method == "exact":
            u = np.mod(self._offset + slots.astype(np.float64) * _GOLDEN, 1.0)
        else:
            u = np.empty(len(slots))
            for block in range(start // _RANDOM_BLOCK, (stop - 1) // _RANDOM_BLOCK + 1):
                draws = rng_for(*self._key, block).random(_RANDOM_BLOCK)
                first = block * _RANDOM_BLOCK
                lo, hi = max(start, first), min(stop, first + _RANDOM_BLOCK)
                u[lo - start:hi - start] = draws[lo - first:hi - first]
        return np.searchsorted(self._cdf, u, side="right").clip(0, len(self.shares) - 1)


class FlanTaskExamples:
    """Random-access tokenized examples of a flantune task variant, for one process."""

    def __init__(self, flan_task: FlanTask, variant: Variant, split: str, *, seed: int,
                 process_index: int = 0, process_count: int = 1):
        self.flan_task, self.variant, self.split = flan_task, variant, split
        self.seed, self.process_index, self.process_count = seed, process_index, process_count
        self.num_records = flan_task.num_records(split)
        if self.num_records == 0:
            raise DataError(f"Task '{flan_task.name}' has no records in split '{split}'.")
        self._length_fn = token_length_fn(flan_task.output_features)
        self._orders: dict[int, np.ndarray] = {}

    def _record_index(self, k: int) -> tuple[int, int]:
        position = k * self.process_count + self.process_index
        epoch, offset = divmod(position, self.num_records)
        order = self._orders.get(epoch)
        if order is None:
            order = rng_for(self.seed, self.flan_task.name, self.split, "order", epoch
                            ).permutation(self.num_records)
            self._orders = {epoch: order}  # epochs are read in order; keep one
        return int(order[offset]), epoch

    def rendered(self, k: int) -> dict[str, Any]:
        """The text of example ``k`` (inputs, targets, template, ...) before tokenization."""
        index, epoch = self._record_index(int(k))
        return self.flan_task.render(self.split, index, self.variant, epoch=epoch,
                                     length_fn=self._length_fn)

    def get_many(self, ks: Sequence[int]) -> list[dict[str, Any]]:
        rendered = [self.rendered(k) for k in ks]
        features = self.flan_task.output_features
        out: list[dict[str, Any]] = [{} for _ in rendered]
        for name in ("inputs", "targets"):
            if name not in features:
                continue
            ids = encode_batch(features[name].vocabulary, [r[name] for r in rendered])
            eos = [features[name].vocabulary.eos_id] if features[name].add_eos else []
            if None in eos:
                raise DataError(f"Task '{self.flan_task.name}': its {name} end with EOS, but the "
                                f"vocabulary {features[name].vocabulary!r} has none; set "
                                "eos_token in the tokenizer's tokenizer_config.json.")
            for example, tokens in zip(out, ids, strict=True):
                example[name] = np.asarray(list(tokens) + eos, dtype=np.int32)
        return out


class ChatTaskExamples(FlanTaskExamples):
    """Random-access examples of a chat task: whole conversations with their loss mask, in the
    same seeded record order as templated tasks."""

    def __init__(self, chat_task: ChatTask, split: str, *, seed: int, process_index: int = 0,
                 process_count: int = 1):
        super().__init__(chat_task, None, split, seed=seed, process_index=process_index,
                         process_count=process_count)

    def get_many(self, ks: Sequence[int]) -> list[dict[str, Any]]:
        return [self.flan_task.example(self.split, self._record_index(int(k))[0]) for k in ks]

    def rendered(self, k: int) -> dict[str, Any]:
        """The rendered conversation of example ``k``, its tokens and loss mask."""
        index, _ = self._record_index(int(k))
        encoded = self.flan_task.encode(self.split, index)
        _, offsets = hf_vocabulary(self.flan_task.vocabulary).encode_with_offsets(encoded.text)
        return {"conversation": encoded.text, "tokens": encoded.tokens,
                "loss_mask": encoded.loss_mask, "offsets": offsets,
                "template": self.flan_task.chat_template().name, "variant": "chat",
                "num_exemplars": 0}


class PreferenceTaskExamples(FlanTaskExamples):
    """Random-access pairs of a preference task, in the same seeded record order."""

    def __init__(self, preference_task: PreferenceTask, split: str, *, seed: int,
                 process_index: int = 0, process_count: int = 1):
        super().__init__(preference_task, None, split, seed=seed, process_index=process_index,
                         process_count=process_count)

    def get_many(self, ks: Sequence[int]) -> list[dict[str, Any]]:
        return [self.flan_task.example(self.split, self._record_index(int(k))[0]) for k in ks]

    def rendered(self, k: int) -> dict[str, Any]:
        """The pair of example ``k`` as text, with its token counts."""
        return self.flan_task.rendered(self.split, self._record_index(int(k))[0])


class SeqioTaskExamples:
    """Sequential tokenized examples of a plain seqio task (its own preprocessors), one process."""

    def __init__(self, task: seqio.Task, split: str, *, seed: int, process_index: int = 0,
                 process_count: int = 1):
        if split not in task.splits:
            raise DataError(f"Task '{task.name}' has no split '{split}'; its splits are "
                            f"{list(task.splits)}.")
        self.task, self.split, self.seed = task, split, seed
        self.shard = seqio.ShardInfo(process_index, process_count)
        self._position = None
        self._iterator = None

    def _seek(self, k: int) -> None:
        dataset = self.task.get_dataset(sequence_length=None, split=self.split, shuffle=True,
                                        seed=self.seed, shard_info=self.shard, num_epochs=None,
                                        use_cached=False)
        # Resuming a plain seqio task replays its tf.data pipeline up to the position.
        self._iterator = dataset.skip(k).as_numpy_iterator() if k else dataset.as_numpy_iterator()
        self._position = k

    def get_many(self, ks: Sequence[int]) -> list[dict[str, Any]]:
        out = []
        for k in ks:
            if self._position != k:
                self._seek(int(k))
            try:
                example = next(self._iterator)
            except (StopIteration, tf.errors.OutOfRangeError):
                raise DataError(f"Task '{self.task.name}' split '{self.split}' is empty.") from None
            self._position += 1
            out.append({name: np.asarray(example[name], dtype=np.int32)
                        for name in ("inputs", "targets") if name in example})
        return out

    def rendered(self, k: int) -> dict[str, Any]:
        """Example ``k`` decoded back to text with the task's vocabularies."""
        example = self.get_many([k])[0]
        text = {name: self.task.output_features[name].vocabulary.decode(tokens.tolist())
                for name, tokens in example.items()}
        return {**text, "template": "(seqio preprocessors)", "variant": "-", "num_exemplars": 0}


def task_examples(task_name: str, split: str, *, seed: int, process_index: int = 0,
                  process_count: int = 1) -> FlanTaskExamples | SeqioTaskExamples:
    """The example reader for a leaf task: fast random access for flantune tasks."""
    chat = chat_task_for(task_name)
    if chat is not None:
        return ChatTaskExamples(chat, split, seed=seed, process_index=process_index,
                                process_count=process_count)
    pairs = preference_task_for(task_name)
    if pairs is not None:
        return PreferenceTaskExamples(pairs, split, seed=seed, process_index=process_index,
                                      process_count=process_count)
    found = flan_task_for(task_name)
    if found is not None:
        flan_task, variant = found
        return FlanTaskExamples(flan_task, variant, split, seed=seed,
                                process_index=process_index, process_count=process_count)
    return SeqioTaskExamples(seqio.TaskRegistry.get(task_name), split, seed=seed,
                             process_index=process_index, process_count=process_count)


class ExampleStream:
    """The examples of a task or mixture for one process, read a window of slots at a time."""

    def __init__(self, mixture_or_task: str, *, split: str = "train", seed: int = 0,
                 process_index: int = 0, process_count: int = 1, mixing: str = "exact"):
        if not 0 <= process_index < process_count:
            raise DataError(f"process_index {process_index} is not in [0, {process_count}).")
        self.name = mixture_or_task
        provider = get_provider(mixture_or_task)
        shares = task_shares(provider)
        self.task_names = list(shares)
        self.shares = np.asarray([shares[n] for n in self.task_names])
        self.split, self.seed = split, seed
        self.process_index, self.process_count = process_index, process_count
        self.schedule = MixingSchedule(self.shares, seed=seed, process_index=process_index,
                                       process_count=process_count, method=mixing)
        self._readers: dict[int, FlanTaskExamples | SeqioTaskExamples] = {}

    def reader(self, task_id: int) -> FlanTaskExamples | SeqioTaskExamples:
        if task_id not in self._readers:
            self._readers[task_id] = task_examples(
                self.task_names[task_id], self.split, seed=self.seed,
                process_index=self.process_index, process_count=self.process_count)
        return self._readers[task_id]

    def read(self, start: int, stop: int, counts: np.ndarray
             ) -> tuple[list[dict[str, Any]], np.ndarray]:
        """Examples of slots ``[start, stop)`` given per-task ``counts`` before ``start``.

        Returns the examples in slot order (each with ``task_index``) and the counts after.
        """
        choices = self.schedule.choices(start, stop)
        examples: list[dict[str, Any] | None] = [None] * len(choices)
        for task_id in np.unique(choices):
            slots = np.flatnonzero(choices == task_id)
            ks = counts[task_id] + np.arange(len(slots))
            for slot, example in zip(slots, self.reader(int(task_id)).get_many(ks), strict=True):
                example["task_index"] = int(task_id)
                examples[slot] = example
        counts = counts + np.bincount(choices, minlength=len(self.task_names))
        return examples, counts  # type: ignore[return-value]


def sample_examples(mixture_or_task: str, n: int, *, split: str = "train", seed: int = 0,
                    mixing: str = "exact") -> list[dict[str, Any]]:
    """The first ``n`` tokenized examples (with EOS and ``task_index``) of a mixture's stream."""
    stream = ExampleStream(mixture_or_task, split=split, seed=seed, mixing=mixing)
    examples, _ = stream.read(0, n, np.zeros(len(stream.task_names), dtype=np.int64))
    return examples
