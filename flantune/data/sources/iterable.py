"""A record source over any deterministic generator of dict records."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from flantune.data.errors import RecordError
from flantune.data.sources.base import (
    Format,
    OnBadRecord,
    RecordSource,
    _RecordChecker,
)


class IterableSource(RecordSource):
    """Records yielded by ``fn()`` (a deterministic generator), cached as they are reached.

    Index ``i`` is the i-th record yielded; ``len()`` runs the generator to the end (give
    ``limit`` for endless generators). ``format``/``fields``/``on_bad_record`` work as for files;
    locations read ``"<name> item <i>"`` (0-based position in the generator's output).
    """

    def __init__(self, fn: Callable[[], Iterable[Mapping[str, Any]]] | Iterable[Mapping[str, Any]],
                 *, name: str | None = None, format: Format = None,  # noqa: A002
                 fields: Sequence[str] | None = None, on_bad_record: OnBadRecord = "raise",
                 limit: int | None = None, task: str | None = None):
        if not callable(fn) and not isinstance(fn, Iterable):
            raise TypeError(f"IterableSource needs a generator function or an iterable, got "
                            f"{type(fn).__name__}")
        self._fn = fn
        self.name = name or getattr(fn, "__qualname__", None) or type(fn).__name__
        self.limit = limit
        self._checker = _RecordChecker(fmt=format, fields=fields, on_bad_record=on_bad_record,
                                       task=task)
        self.skipped = self._checker.skipped
        self._records: list[dict[str, Any]] = []
        self._locations: list[str] = []
        self._iterator: Iterator[Any] | None = None
        self._position = 0
        self._exhausted = False
        self._lock = threading.RLock()

    def _fill(self, upto: int | None) -> None:
        """Pull from the generator until ``upto`` records are cached (or it ends)."""
        with self._lock:
            if self._iterator is None and not self._exhausted:
                self._iterator = iter(self._fn() if callable(self._fn) else self._fn)
            while not self._exhausted and (upto is None or len(self._records) < upto):
                if self.limit is not None and self._position >= self.limit:
                    self._finish()
                    break
                try:
                    raw = next(self._iterator)
                except StopIteration:
                    self._finish()
                    break
                location = f"{self.name} item {self._position}"
                self._position += 1
                try:
                    records = self._checker.expand(raw)
                except RecordError as err:
                    self._checker.bad(str(err), path=location, line=None, location=location)
                    continue
                for sub, record in enumerate(records):
                    self._records.append(record)
                    self._locations.append(
                        location if len(records) == 1
                        else f"{location} (record {sub + 1} of {len(records)})")

    def _finish(self) -> None:
        self._exhausted = True
        self._iterator = None
        self._checker.report(self.name, len(self._records))

    def __len__(self) -> int:
        self._fill(None)
        return len(self._records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if isinstance(index, int) and index >= 0:  # no need to run to the end
            self._fill(index + 1)
            if index < len(self._records):
                return dict(self._records[index])
        return super().__getitem__(index)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        index = 0
        while True:
            self._fill(index + 1)
            if index >= len(self._records):
                return
            yield dict(self._records[index])
            index += 1

    def _get(self, index: int) -> dict[str, Any]:
        return dict(self._records[index])

    def _where(self, index: int) -> str:
        return self._locations[index]
