"""reasoning-gym procedural generators as record sources."""

from __future__ import annotations

import contextlib
import difflib
import io
import os
from collections.abc import Iterator, Mapping
from typing import Any

from flantune.data.errors import DataError, RecordError, UnknownNameError
from flantune.data.sources.base import (
    OnBadRecord,
    RecordSource,
    _preview,
    _RecordChecker,
    _Screen,
)

#: Generators whose output differs between processes for the same seed (reasoning-gym 0.1.25):
#: these depend on PYTHONHASHSEED ...
HASH_SEED_DEPENDENT = frozenset({"isomorphic_strings", "knight_swap", "polynomial_multiplication",
                                 "ransom_note", "word_ladder"})
#: ... and these are never reproducible (``codeio`` executes sampled programs).
NEVER_REPRODUCIBLE = frozenset({"codeio"})


class ReasoningGymSource(RecordSource):
    """Items of a reasoning-gym procedural generator, by index.

    Records are ``{"question", "answer", "metadata", "has_answer", "dataset", "index"}``;
    ``answer`` is ``""`` for generators that only verify answers (``has_answer`` False).
    Anything the generator prints is discarded so stdout stays clean.

    An item with an empty question, or an empty answer from a generator that gives answers, is
    bad: by default it raises RecordError when read; with ``on_bad_record="skip"`` every item is
    generated once on first use and the bad ones are left out, listed in ``skipped`` and
    reported (``index`` stays the generator's own item index).
    """

    def __init__(self, dataset_name: str, *, size: int, seed: int,
                 config: Mapping[str, Any] | None = None, allow_nondeterministic: bool = False,
                 on_bad_record: OnBadRecord = "raise", task: str | None = None):
        with _quiet_stdout():
            import reasoning_gym
            from reasoning_gym.factory import DATASETS

        self.dataset_name, self.size, self.seed = dataset_name, int(size), int(seed)
        self.config = dict(config or {})
        checker = _RecordChecker(fmt=None, fields=None, on_bad_record=on_bad_record, task=task)
        self.skipped = checker.skipped
        name = f"reasoning_gym:{dataset_name}(seed={self.seed})"
        self._screen = _Screen(checker, name, self.size, self._item, lambda i: f"{name}[{i}]")
        if dataset_name not in DATASETS:
            close = difflib.get_close_matches(dataset_name, list(DATASETS), n=5, cutoff=0.5)
            hint = (f"did you mean {', '.join(close)}?" if close
                    else f"known generators: {', '.join(sorted(DATASETS))}")
            raise UnknownNameError(f"unknown reasoning-gym generator '{dataset_name}'; {hint}")
        if not allow_nondeterministic:
            self._check_reproducible(dataset_name)
        if self.size <= 0:
            raise DataError(f"reasoning-gym '{dataset_name}': size must be positive, got {size}")
        clash = {"size", "seed"} & set(self.config)
        if clash:
            raise DataError(f"reasoning-gym '{dataset_name}': pass {sorted(clash)} as arguments "
                            "of ReasoningGymSource, not inside config")
        try:
            with _quiet_stdout():
                self._dataset = reasoning_gym.create_dataset(dataset_name, size=self.size,
                                                             seed=self.seed, **self.config)
        except (TypeError, ValueError, AssertionError) as err:
            config_cls = DATASETS[dataset_name][1]
            options = sorted(set(getattr(config_cls, "__dataclass_fields__", {}))
                             - {"seed", "size"})
            raise DataError(f"reasoning-gym '{dataset_name}': bad config {self.config}: "
                            f"{err or type(err).__name__}. Its options are {options}.") from None

    @staticmethod
    def _check_reproducible(name: str) -> None:
        if name in NEVER_REPRODUCIBLE:
            raise DataError(f"reasoning-gym '{name}' gives different records on every run, even "
                            "with the same seed; pre-generate it to a JSONL file, or pass "
                            "allow_nondeterministic=True if you accept that.")
        hash_seed = os.environ.get("PYTHONHASHSEED", "random")
        if name in HASH_SEED_DEPENDENT and not hash_seed.isdigit():
            raise DataError(f"reasoning-gym '{name}' depends on Python's string hashing, so "
                            "the same seed gives different records in different processes. Set "
                            "PYTHONHASHSEED to a fixed number for every process, pre-generate "
                            "it to a JSONL file, or pass allow_nondeterministic=True.")

    def __len__(self) -> int:
        return len(self._screen)

    def _get(self, index: int) -> dict[str, Any]:
        return self._screen.get(index)

    def _item(self, index: int) -> dict[str, Any]:
        """Generator item ``index`` as a record; RecordError if it is bad."""
        with _quiet_stdout():
            item = self._dataset[index]
        answer = item.get("answer")
        record = {"question": str(item["question"]),
                  "answer": "" if answer is None else str(answer),
                  "metadata": dict(item.get("metadata") or {}),
                  "has_answer": answer is not None,
                  "dataset": self.dataset_name,
                  "index": index}
        if not record["question"].strip():
            raise RecordError("the generator gave an empty question")
        if record["has_answer"] and not record["answer"].strip():
            raise RecordError("the generator gave an empty answer, which leaves no target to "
                              f"train on (question: {_preview(record['question'])})")
        return record

    def _where(self, index: int) -> str:
        return self._screen.where(self._screen.item_index(index))

    def score_answer(self, prediction: str | None, record: Mapping[str, Any]) -> float:
        """The generator's own score of ``prediction`` for ``record`` (1.0 = correct)."""
        entry = {"question": record["question"],
                 "answer": record["answer"] if record.get("has_answer", True) else None,
                 "metadata": record["metadata"]}
        with _quiet_stdout():
            return float(self._dataset.score_answer(prediction, entry))


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Discard what third-party code prints (progress dots) so stdout stays clean."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield
