"""Deterministic splits of a record source."""

from __future__ import annotations

from typing import Any

from flantune.data.errors import DataError
from flantune.data.sources.base import RecordSource


class ModuloSplit(RecordSource):
    """A deterministic split of one source: its records with ``index % n == remainder``
    (``holdout=True``) or all the others (``holdout=False``); e.g. n=5 holds out 20%."""

    def __init__(self, source: RecordSource, *, n: int, remainder: int = 0,
                 holdout: bool = True):
        if n < 2 or not 0 <= remainder < n:
            raise DataError(f"ModuloSplit needs n >= 2 and 0 <= remainder < n, got n={n}, "
                            f"remainder={remainder}")
        self.source = source
        self.skipped = source.skipped
        self._indices = [i for i in range(len(source)) if (i % n == remainder) == holdout]

    def __len__(self) -> int:
        return len(self._indices)

    def _get(self, index: int) -> dict[str, Any]:
        return self.source[self._indices[index]]

    def _where(self, index: int) -> str:
        return self.source.where(self._indices[index])
