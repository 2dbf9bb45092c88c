"""Record sources read from files: JSON lines and CSV."""

from __future__ import annotations

import array
import csv
import io
import json
import os
import threading
from collections.abc import Sequence
from typing import Any

from flantune.data.errors import DataError, RecordError
from flantune.data.sources.base import (
    Format,
    OnBadRecord,
    PicklesWithoutLock,
    RecordSource,
    _existing_file,
    _located,
    _RecordChecker,
    _task_prefix,
)

_UTF8_BOM = b"\xef\xbb\xbf"


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
        line = data.rstrip(b"\r\n")
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as err:
            where = f"at byte {err.start + 1} of the line (file byte offset {offset + err.start})"
            if err.reason == "unexpected end of data":  # a multi-byte character cut short
                raise RecordError(
                    f"the line is truncated: it ends inside a UTF-8 character (bytes "
                    f"{line[err.start:]!r} {where}), so it was cut short, e.g. by an interrupted "
                    "download or a split at a byte count; restore the full line or remove it"
                ) from None
            raise RecordError(
                f"invalid UTF-8 byte {line[err.start:err.start + 1]!r} {where}; re-encode the "
                "file as UTF-8, e.g. `iconv -f latin1 -t utf-8`") from None
        try:
            return json.loads(text)
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


class CsvSource(PicklesWithoutLock, RecordSource):
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
