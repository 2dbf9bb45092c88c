"""Record sources: deterministic, random-access raw records of one split.

A :class:`RecordSource` is a sequence of plain ``dict`` records with a human location for each
(``where(i)``, e.g. ``"data/a.jsonl:17"``) so later errors can point at the input. Sources:

- :class:`JsonlSource` and :class:`CsvSource`: files, optionally normalized by a format from
  :mod:`flantune.data.formats` (a format may expand one line into several records);
- :class:`TfdsSource`: a TensorFlow Datasets dataset by name;
- :class:`ReasoningGymSource`: a reasoning-gym procedural generator;
- :class:`IterableSource`: any deterministic generator of dict records.

File sources validate every record when they build their index (on first use), so bad input
surfaces before training starts. By default a bad record raises :class:`RecordError` naming the
file and 1-based line; with ``on_bad_record="skip"`` it is left out, listed in ``skipped`` and
reported once through ``logging``.
"""

from __future__ import annotations

import abc
import array
import contextlib
import csv
import difflib
import io
import json
import logging
import operator
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

import numpy as np

from flantune.data.errors import DataError, RecordError, UnknownNameError
from flantune.data.formats import FormatFn, apply_format, get_format

logger = logging.getLogger(__name__)

OnBadRecord = Literal["raise", "skip"]
Format = str | FormatFn | None

_SKIP_HINT = ("Fix the record, or pass on_bad_record='skip' to leave bad records out "
              "(they are counted and reported).")
_REPORTED_LOCATIONS = 5
_UTF8_BOM = b"\xef\xbb\xbf"


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


# --------------------------------------------------------------------------- record checking


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


# --------------------------------------------------------------------------- JSONL


class JsonlSource(RecordSource):
    """Records from a JSON-lines file, one JSON object per line, read by byte offset.

    The index (byte offset and 1-based line of every record) is built and every line validated
    on first use; records are re-read from disk on access, so files larger than memory work.
    Blank lines are skipped. ``format`` normalizes each line (and may expand it into several
    records); ``fields`` lists raw fields that must be present and non-empty.
    """

    def __init__(self, path: str | os.PathLike[str], *, format: Format = None,  # noqa: A002
                 fields: Sequence[str] | None = None, on_bad_record: OnBadRecord = "raise",
                 task: str | None = None):
        self.path = _existing_file(path, "JSONL", task)
        self._checker = _RecordChecker(fmt=format, fields=fields, on_bad_record=on_bad_record,
                                       task=task)
        self.skipped = self._checker.skipped
        self._index: tuple[array.array, ...] | None = None
        self._size_at_index = -1
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._lock = threading.Lock()
        self._handle: io.BufferedReader | None = None
        self._cached: tuple[int, list[dict[str, Any]]] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for key in ("_lock", "_handle", "_cached"):
            state.pop(key)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_runtime()

    # -- index
    def _ensure_index(self) -> tuple[array.array, ...]:
        with self._lock:
            if self._index is None:
                self._index = self._build_index()
            return self._index

    def _build_index(self) -> tuple[array.array, ...]:
        offsets, lines, subs, counts = (array.array("q"), array.array("q"), array.array("i"),
                                        array.array("i"))
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 - closed below.
        except OSError as err:
            raise DataError(f"{_task_prefix(self._checker.task)}cannot open JSONL file "
                            f"{self.path}: {err.strerror}") from None
        with handle:
            offset, line = 0, 0
            for data in handle:
                line += 1
                start, offset = offset, offset + len(data)
                if line == 1 and data.startswith(_UTF8_BOM):
                    data, start = data[len(_UTF8_BOM):], start + len(_UTF8_BOM)
                if not data.strip():
                    continue
                try:
                    records = self._checker.expand(self._parse(data, start))
                except RecordError as err:
                    self._checker.bad(str(err), path=self.path, line=line,
                                      location=f"{self.path}:{line}")
                    continue
                for sub in range(len(records)):
                    offsets.append(start)
                    lines.append(line)
                    subs.append(sub)
                    counts.append(len(records))
        self._size_at_index = offset
        self._checker.report(self.path, len(offsets))
        return offsets, lines, subs, counts

    @staticmethod
    def _parse(data: bytes, offset: int) -> Any:
        """One line's JSON value; RecordError (without location) if it is not valid."""
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise RecordError(
                f"invalid UTF-8 byte {data[err.start:err.start + 1]!r} at byte {err.start + 1} of "
                f"the line (file byte offset {offset + err.start}); re-encode the file as UTF-8, "
                "e.g. `iconv -f latin1 -t utf-8`") from None
        try:
            return json.loads(text.rstrip("\r\n"))
        except json.JSONDecodeError as err:
            raise RecordError(f"malformed JSON at column {err.colno}: {err.msg}") from None

    # -- access
    def __len__(self) -> int:
        return len(self._ensure_index()[0])

    def _where(self, index: int) -> str:
        _, lines, subs, counts = self._ensure_index()
        return _located(self.path, lines[index], subs[index], counts[index])

    def _get(self, index: int) -> dict[str, Any]:
        offsets, lines, subs, _ = self._ensure_index()
        offset = offsets[index]
        with self._lock:
            cached = self._cached
            if cached is not None and cached[0] == offset:
                records = cached[1]
            else:
                records = self._read(offset, lines[index])
                self._cached = (offset, records)
        return dict(records[subs[index]])

    def _read(self, offset: int, line: int) -> list[dict[str, Any]]:
        if self._handle is None:
            self._handle = open(self.path, "rb")  # noqa: SIM115 - kept open for reads.
            size = os.fstat(self._handle.fileno()).st_size
            if size != self._size_at_index:
                raise DataError(f"{self.path} changed size since it was indexed "
                                f"({self._size_at_index} -> {size} bytes); rebuild the source.")
        self._handle.seek(offset)
        data = self._handle.readline()
        try:
            return self._checker.expand(self._parse(data, offset))
        except RecordError as err:  # only if the file changed under us
            raise RecordError(str(err), path=self.path, line=line,
                              task=self._checker.task) from None


# --------------------------------------------------------------------------- CSV


class CsvSource(RecordSource):
    """Records from a CSV file with a header row (each row a dict of strings).

    The file is parsed and every row validated on first use and the rows are kept in memory
    (quoted fields may span lines; line numbers are those of the physical file).
    """

    def __init__(self, path: str | os.PathLike[str], *, format: Format = None,  # noqa: A002
                 fields: Sequence[str] | None = None, delimiter: str = ",",
                 on_bad_record: OnBadRecord = "raise", task: str | None = None):
        self.path = _existing_file(path, "CSV", task)
        self.delimiter = delimiter
        self._checker = _RecordChecker(fmt=format, fields=fields, on_bad_record=on_bad_record,
                                       task=task)
        self.skipped = self._checker.skipped
        self._rows: list[dict[str, Any]] | None = None
        self._locations: list[str] = []
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_lock")
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _ensure_rows(self) -> list[dict[str, Any]]:
        with self._lock:
            if self._rows is None:
                self._rows = self._load()
            return self._rows

    def _load(self) -> list[dict[str, Any]]:
        task = self._checker.task
        try:
            with open(self.path, "rb") as handle:
                data = handle.read()
        except OSError as err:
            raise DataError(f"{_task_prefix(task)}cannot open CSV file {self.path}: "
                            f"{err.strerror}") from None
        # Undecodable bytes become lone surrogates, so one bad row is reported (or skipped)
        # with its line instead of failing the whole file.
        text = data.removeprefix(_UTF8_BOM).decode("utf-8", errors="surrogateescape")
        # The csv module caps fields at 128 KiB by default; long documents are legitimate.
        csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=self.delimiter,
                            strict=True)
        header: list[str] | None = None
        rows: list[dict[str, Any]] = []
        end_of_previous = 0
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as err:
                line = end_of_previous + 1
                end_of_previous = reader.line_num
                if header is None:
                    raise RecordError(f"malformed CSV header: {err}", path=self.path,
                                      line=line, task=task) from None
                self._checker.bad(f"malformed CSV: {err}", path=self.path, line=line,
                                  location=f"{self.path}:{line}")
                continue
            line, end_of_previous = end_of_previous + 1, reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            if header is None:
                header = self._check_header(row, line)
                continue
            try:
                raw = self._row_to_dict(header, row)
                records = self._checker.expand(raw)
            except RecordError as err:
                self._checker.bad(str(err), path=self.path, line=line,
                                  location=f"{self.path}:{line}")
                continue
            for sub, record in enumerate(records):
                rows.append(record)
                self._locations.append(_located(self.path, line, sub, len(records)))
        if header is None:
            raise DataError(f"{_task_prefix(task)}CSV file {self.path} is empty; it needs a "
                            "header row naming the columns.")
        self._checker.report(self.path, len(rows))
        return rows

    def _check_header(self, row: list[str], line: int) -> list[str]:
        names = [name.strip() for name in row]
        problems = []
        if any(not name for name in names):
            problems.append("an empty column name")
        duplicates = sorted({n for n in names if n and names.count(n) > 1})
        if duplicates:
            problems.append(f"duplicate column names {duplicates}")
        if any(_has_surrogate(name) for name in names):
            problems.append("bytes that are not UTF-8")
        missing = [f for f in self._checker.fields if f not in names]
        if missing:
            problems.append(f"no column for required field(s) {missing}")
        if problems:
            raise RecordError(f"bad CSV header {names}: {'; '.join(problems)}. The first "
                              f"non-blank row must name the columns (delimiter "
                              f"{self.delimiter!r}).", path=self.path, line=line,
                              task=self._checker.task)
        return names

    @staticmethod
    def _row_to_dict(header: list[str], row: list[str]) -> dict[str, str]:
        if len(row) != len(header):
            raise RecordError(f"row has {len(row)} fields but the header has {len(header)}")
        for name, cell in zip(header, row, strict=True):
            if _has_surrogate(cell):
                bad = next(ch for ch in cell if 0xDC80 <= ord(ch) <= 0xDCFF)
                raise RecordError(f"field '{name}' holds invalid UTF-8 byte "
                                  f"{bytes([ord(bad) - 0xDC00])!r}; re-encode the file as "
                                  "UTF-8, e.g. `iconv -f latin1 -t utf-8`")
        return dict(zip(header, row, strict=True))

    def __len__(self) -> int:
        return len(self._ensure_rows())

    def _get(self, index: int) -> dict[str, Any]:
        return dict(self._ensure_rows()[index])

    def _where(self, index: int) -> str:
        self._ensure_rows()
        return self._locations[index]


def _has_surrogate(text: str) -> bool:
    return any(0xDC80 <= ord(ch) <= 0xDCFF for ch in text)


# --------------------------------------------------------------------------- generators


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


# --------------------------------------------------------------------------- TFDS


class TfdsSource(RecordSource):
    """A TensorFlow Datasets split, by name (e.g. ``"glue/rte:2.0.0"``), as python dicts.

    Uses TFDS random access (``as_data_source``) when the dataset was prepared in a random-access
    file format (array_record, parquet); otherwise reads the split in file order once, lazily,
    caching records as they are reached. Bytes become ``str``, numpy values python values.
    """

    def __init__(self, name: str, split: str, *, data_dir: str | os.PathLike[str] | None = None,
                 fields: Sequence[str] | None = None):
        import tensorflow_datasets as tfds  # heavy: import only when used

        self.name, self.split = name, split
        self.data_dir = os.fspath(data_dir) if data_dir is not None else None
        self.skipped = []
        try:
            builder = tfds.builder(name, data_dir=self.data_dir)
        except (tfds.core.registered.DatasetNotFoundError, ValueError) as err:
            raise UnknownNameError(f"unknown TFDS dataset '{name}': {_compact(err)}") from None
        self._builder = builder
        features = list(builder.info.features.keys()) if builder.info.features else []
        missing = [f for f in (fields or ()) if features and f not in features]
        if missing:
            raise DataError(f"TFDS dataset '{name}' has no feature(s) {missing}; its features "
                            f"are {features}.")
        self._random_access: Sequence[Any] | None = None
        self._cache: list[dict[str, Any]] = []
        self._iterator: Iterator[Any] | None = None
        self._lock = threading.Lock()
        try:
            self._random_access = builder.as_data_source(split=split)
            self._length = len(self._random_access)
            return
        except (NotImplementedError, ValueError, KeyError, AssertionError) as err:
            random_access_error = err
        if not builder.is_prepared():
            raise DataError(self._not_prepared_message(builder)) from None
        try:
            self._length = int(builder.info.splits[split].num_examples)
        except (KeyError, ValueError) as err:
            raise DataError(f"TFDS dataset '{name}' has no split '{split}'; its splits are "
                            f"{sorted(builder.info.splits)} ({_first_line(err)})") from None
        logger.info("TFDS '%s' has no random access (%s); reading split '%s' in order.",
                    name, _first_line(random_access_error), split)

    def _not_prepared_message(self, builder: Any) -> str:
        data_dir_flag = f" --data_dir={self.data_dir}" if self.data_dir else ""
        data_dir_arg = f", data_dir={self.data_dir!r}" if self.data_dir else ""
        where = ("the data_dir given" if self.data_dir else
                 "$TFDS_DATA_DIR, default ~/tensorflow_datasets")
        manual = getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None)
        manual_step = ""
        if manual:
            manual_step = (" It needs files you download by hand first, then pass "
                           "--manual_dir=DIR to the command; TFDS says: "
                           + " ".join(str(manual).split()))
            data_dir_flag += " --manual_dir=DIR"
        return (f"TFDS dataset '{self.name}' is not prepared locally (looked in "
                f"{builder.data_dir}, under {where}). Prepare it once, with network access, "
                f"by running `tfds build {self.name}{data_dir_flag} "
                f"--file_format=array_record` (or `python -m tensorflow_datasets.scripts."
                f"download_and_prepare --datasets={self.name}{data_dir_flag}`, or in python "
                f"`tfds.builder({self.name!r}{data_dir_arg}).download_and_prepare("
                "file_format='array_record')`); array_record gives random access."
                + manual_step)

    def __len__(self) -> int:
        return self._length

    def _get(self, index: int) -> dict[str, Any]:
        if self._random_access is not None:
            return self._convert(self._random_access[index], index)
        with self._lock:
            if self._iterator is None and len(self._cache) <= index:
                import tensorflow_datasets as tfds

                dataset = self._builder.as_dataset(
                    split=self.split, shuffle_files=False,
                    read_config=tfds.ReadConfig(interleave_cycle_length=1))
                self._iterator = iter(tfds.as_numpy(dataset))
            while len(self._cache) <= index:
                try:
                    example = next(self._iterator)
                except StopIteration:
                    raise DataError(f"TFDS '{self.name}' split '{self.split}' ended after "
                                    f"{len(self._cache)} records, but its metadata says "
                                    f"{self._length}") from None
                self._cache.append(self._convert(example, len(self._cache)))
            return dict(self._cache[index])

    def _convert(self, example: Any, index: int) -> dict[str, Any]:
        try:
            return to_python(example)
        except UnicodeDecodeError as err:
            raise RecordError(f"a string feature is not valid UTF-8 ({err.reason}); decode "
                              "it in the task's record function instead",
                              path=self._where(index)) from None

    def _where(self, index: int) -> str:
        return f"tfds:{self.name}/{self.split}[{index}]"


def to_python(value: Any) -> Any:
    """Numpy/TFDS values -> plain python: bytes -> str, arrays -> lists, scalars -> numbers."""
    if isinstance(value, Mapping):
        return {str(k): to_python(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OSU":
            return to_python(value.tolist()) if value.ndim else to_python(value.item())
        return value.tolist()
    if isinstance(value, np.generic):
        return to_python(value.item())
    if isinstance(value, list | tuple):
        return [to_python(v) for v in value]
    return value


def _compact(err: BaseException, limit: int = 800) -> str:
    """An exception's message on one line, cut to ``limit`` characters."""
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# --------------------------------------------------------------------------- splits


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


# --------------------------------------------------------------------------- reasoning-gym

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
    """

    def __init__(self, dataset_name: str, *, size: int, seed: int,
                 config: Mapping[str, Any] | None = None, allow_nondeterministic: bool = False):
        with _quiet_stdout():
            import reasoning_gym
            from reasoning_gym.factory import DATASETS

        self.dataset_name, self.size, self.seed = dataset_name, int(size), int(seed)
        self.config = dict(config or {})
        self.skipped = []
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
        return self.size

    def _get(self, index: int) -> dict[str, Any]:
        with _quiet_stdout():
            item = self._dataset[index]
        answer = item.get("answer")
        return {"question": str(item["question"]),
                "answer": "" if answer is None else str(answer),
                "metadata": dict(item.get("metadata") or {}),
                "has_answer": answer is not None,
                "dataset": self.dataset_name,
                "index": index}

    def _where(self, index: int) -> str:
        return f"reasoning_gym:{self.dataset_name}(seed={self.seed})[{index}]"

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


__all__ = ["CsvSource", "IterableSource", "JsonlSource", "ModuloSplit", "ReasoningGymSource",
           "RecordSource", "TfdsSource", "to_python"]
