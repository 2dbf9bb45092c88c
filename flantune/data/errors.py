"""Errors raised by the data layer.

Every error names what was wrong and where (task, file, line, field) and says what to do.
"""

from __future__ import annotations


class DataError(ValueError):
    """Base class for bad-input errors in the data layer."""


class RecordError(DataError):
    """A raw record is malformed (bad JSON, missing field, empty target, bad encoding)."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 task: str | None = None):
        where = []
        if task:
            where.append(f"task '{task}'")
        if path:
            where.append(f"{path}:{line}" if line is not None else str(path))
        prefix = f"[{', '.join(where)}] " if where else ""
        super().__init__(prefix + message)
        self.path = path
        self.line = line
        self.task = task


class TemplateError(DataError):
    """A template cannot be rendered for a record (e.g. it names a field the record lacks)."""


class UnknownNameError(DataError, KeyError):
    """An unknown task or mixture name."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else ""
