"""The record source interface and the record checks the sources share."""

from __future__ import annotations

import abc
import array
import logging
import operator
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

from flantune.data.errors import DataError, RecordError
from flantune.data.formats import FormatFn, apply_format, get_format

logger = logging.getLogger(__name__)

OnBadRecord = Literal["raise", "skip"]
Format = str | FormatFn | None

_SKIP_HINT = ("Fix the record, or pass on_bad_record='skip' to leave bad records out "
              "(they are counted and reported).")
_REPORTED_LOCATIONS = 5


class RecordSource(abc.ABC):
    """Deterministic, random-access raw records of one split."""

    #: (location, reason) of each record left out under ``on_bad_record="skip"``.
    skipped: list[tuple[str, str]]

    @abc.abstractmethod
    def __len__(self) -> int:
        """The number of records."""

    @abc.abstractmethod
    def _get(self, index: int) -> dict[str, Any]:
        """Record ``index``, already checked to be in ``range(len(self))``."""

    @abc.abstractmethod
    def _where(self, index: int) -> str:
        """Location of record ``index``, already checked to be in range."""

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Record ``index`` (negative indices count from the end); IndexError past the end."""
        return self._get(self._check_index(index))

    def where(self, index: int) -> str:
        """Human location of record ``index`` for error messages, e.g. ``"data/a.jsonl:17"``."""
        return self._where(self._check_index(index))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for index in range(len(self)):
            yield self._get(index)

    def _check_index(self, index: int) -> int:
        index = operator.index(index)  # ints and numpy integers; floats are a TypeError
        size = len(self)
        if index < 0:
            index += size
        if not 0 <= index < size:
            raise IndexError(f"record index {index} out of range for {size} records "
                             f"({type(self).__name__})")
        return index


class _RecordChecker:
    """Turns raw records into checked records, and raises or counts the bad ones."""

    def __init__(self, *, fmt: Format, fields: Sequence[str] | None,
                 on_bad_record: OnBadRecord, task: str | None):
        if on_bad_record not in ("raise", "skip"):
            raise ValueError(f"on_bad_record must be 'raise' or 'skip', got {on_bad_record!r}")
        self.format = get_format(fmt) if fmt is not None else None
        self.format_name = fmt if isinstance(fmt, str) else getattr(fmt, "__name__", "custom")
        if isinstance(fields, str):
            fields = [fields]
        self.fields = tuple(fields or ())
        self.on_bad_record = on_bad_record
        self.task = task
        self.skipped: list[tuple[str, str]] = []

    def expand(self, raw: Any) -> list[dict[str, Any]]:
        """Checked record(s) of one raw record; raises RecordError without a location."""
        if not isinstance(raw, Mapping):
            raise RecordError(f"expected a JSON object, got {type(raw).__name__}: "
                              f"{_preview(raw)}")
        for field in self.fields:
            if field not in raw:
                raise RecordError(f"missing required field '{field}'; the record has fields "
                                  f"{sorted(raw)}")
            if _is_empty(raw[field]):
                raise RecordError(f"required field '{field}' is empty")
        if self.format is None:
            return [dict(raw)]
        try:
            return apply_format(self.format, raw)
        except RecordError as err:
            raise RecordError(f"{err} [format '{self.format_name}']") from None
        except (KeyError, IndexError, ValueError, TypeError, AttributeError) as err:
            # A user-registered format that fails on a record still gets the record's location.
            raise RecordError(f"format '{self.format_name}' failed: {type(err).__name__}: "
                              f"{err}") from err

    def bad(self, reason: str, *, path: str, line: int | None, location: str) -> None:
        """Raise a located error for a bad record, or count it under skip mode."""
        if self.on_bad_record == "raise":
            raise RecordError(f"{reason}. {_SKIP_HINT}", path=path, line=line, task=self.task)
        self.skipped.append((location, reason))

    def report(self, name: str, kept: int) -> None:
        """Warn once about skipped records; fail if nothing is left."""
        if not self.skipped:
            if kept == 0:
                raise DataError(f"{_task_prefix(self.task)}{name} holds no records.")
            return
        first = "; ".join(f"{loc}: {why}" for loc, why in self.skipped[:_REPORTED_LOCATIONS])
        if kept == 0:
            raise DataError(f"{_task_prefix(self.task)}all {len(self.skipped)} records of "
                            f"{name} are bad, so nothing is left to use. First: {first}")
        logger.warning("%s%s: skipped %d bad record(s) under on_bad_record='skip' (kept %d). "
                       "First: %s", _task_prefix(self.task), name, len(self.skipped), kept, first)


class PicklesWithoutLock:
    """Pickles without its ``_lock`` (a threading.Lock cannot be pickled); unpickling makes a
    new one, so sources travel to data-loader workers."""

    _lock: threading.Lock

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_lock")
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


class _Screen(PicklesWithoutLock):
    """Random access to ``size`` generated items, some of which may be bad (``read`` raises
    RecordError, without a location, for those). Under ``"raise"`` a bad item raises when it is
    read; under ``"skip"`` every item is read once on first use and the bad ones are left out."""

    def __init__(self, checker: _RecordChecker, name: str, size: int,
                 read: Callable[[int], dict[str, Any]], where: Callable[[int], str]):
        self.checker, self.name, self.size = checker, name, size
        self.read, self.where = read, where
        self._kept: array.array | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self.size if self.checker.on_bad_record == "raise" else len(self._ensure_kept())

    def item_index(self, index: int) -> int:
        """The generator's index of record ``index`` (they differ once items are skipped)."""
        return index if self.checker.on_bad_record == "raise" else self._ensure_kept()[index]

    def get(self, index: int) -> dict[str, Any]:
        item = self.item_index(index)
        try:
            return self.read(item)
        except RecordError as err:
            location = self.where(item)
            if self.checker.on_bad_record == "raise":
                self.checker.bad(str(err), path=location, line=None, location=location)
            raise RecordError(f"{err}; it was good when the source was indexed, so the generator "
                              "is not deterministic", path=location,
                              task=self.checker.task) from None

    def _ensure_kept(self) -> array.array:
        with self._lock:
            if self._kept is None:
                kept = array.array("q")
                for item in range(self.size):
                    try:
                        self.read(item)
                    except RecordError as err:
                        location = self.where(item)
                        self.checker.bad(str(err), path=location, line=None, location=location)
                        continue
                    kept.append(item)
                self.checker.report(self.name, len(kept))
                self._kept = kept
            return self._kept


def _task_prefix(task: str | None) -> str:
    return f"[task '{task}'] " if task else ""


def _is_empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, list | tuple | dict | set):
        return len(value) == 0
    return False


def _preview(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _existing_file(path: str | os.PathLike[str], kind: str, task: str | None) -> str:
    path = os.fspath(path)
    if not os.path.isfile(path):
        problem = "is a directory" if os.path.isdir(path) else "does not exist"
        raise DataError(f"{_task_prefix(task)}{kind} file {path} {problem} (working directory "
                        f"{os.getcwd()}).")
    return path


def _located(path: str, line: int, sub: int, count: int) -> str:
    base = f"{path}:{line}"
    return base if count == 1 else f"{base} (record {sub + 1} of {count} from this line)"
