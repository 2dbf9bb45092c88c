"""What checkpoint errors say, and where their detail goes.

Orbax and TensorStore report a damaged or unwritable checkpoint with the full TensorStore spec
of the array (~50 wrapped lines), and a full disk with one traceback per array and thread
(~1,400 lines for T5-small). flantune's errors are one line naming the step, the file and what
to do; the full text goes to `MODEL_DIR/checkpoint_errors.log` (or, where that cannot be
written, e.g. on a full disk, the same name in the system's temporary directory).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator, Sequence

import jax

DETAIL_LOG = "checkpoint_errors.log"
_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_DISK_FULL_TEXT = re.compile(r"No space left on device|Disk quota exceeded|os_error_code='("
                             + "|".join(str(n) for n in _DISK_FULL_ERRNOS) + ")'")
_OS_ERROR_TEXT = re.compile(r"\[os_error_code='(\d+)'\]|\[Errno (\d+)\]")
_SPEC = re.compile(r"\s*\[tensorstore_spec='.*?'\]", re.DOTALL)
_LOCAL_FILE = re.compile(r'(?:local file|Failed writing:) "([^"]+)"')
_ARRAY = re.compile(r'Error (?:reading|writing) "([^"/]+)/')
_STATUS = re.compile(r"^([A-Z_]{4,}): ")
_MAX_REASON = 200
_MAX_HELD_RECORDS = 200


def _chain(err: BaseException | None) -> Iterator[BaseException]:
    """`err`, its causes and contexts, and the members of exception groups (each once)."""
    stack, seen = [err], set()
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        stack.extend([current.__cause__, current.__context__,
                      *getattr(current, "exceptions", ())])


def is_disk_full(err: BaseException | None) -> bool:
    """Whether `err` (or what caused it) is a full disk or an exceeded quota, as an OSError or
    as TensorStore's "No space left on device [os_error_code='28']"."""
    return any((isinstance(e, OSError) and e.errno in _DISK_FULL_ERRNOS)
               or _DISK_FULL_TEXT.search(str(e)) for e in _chain(err))


def is_os_error(err: BaseException | None) -> bool:
    """Whether `err` (or what caused it) is an operating system error (permissions, I/O)."""
    return any(isinstance(e, OSError) or _OS_ERROR_TEXT.search(str(e)) for e in _chain(err))


def summary(err: BaseException) -> str:
    """One line about `err`: the array and file TensorStore names, and the innermost reason,
    without the TensorStore spec."""
    text = _SPEC.sub("", str(err)).strip()
    parts = []
    array = _ARRAY.search(text)
    if array:
        parts.append(f"array {array.group(1)}")
    files = _LOCAL_FILE.findall(text)
    if files:
        parts.append(f"file {files[-1]}")
    status = _STATUS.match(text)
    reason = " ".join(text.split(": ")[-1].split()) if text else type(err).__name__
    if status and not reason.startswith(status.group(1)):
        reason = f"{status.group(1)}: {reason}"
    if len(reason) > _MAX_REASON:
        reason = reason[:_MAX_REASON - 3] + "..."
    parts.append(f"{type(err).__name__}: {reason}")
    return ", ".join(parts)


def write_detail(directory: str | os.PathLike, headline: str, err: BaseException,
                 extra: Sequence[str] = ()) -> str:
    """Appends `headline`, `err`'s full text and traceback and `extra` lines to DETAIL_LOG in
    `directory` (a local MODEL_DIR) or else in the temporary directory; returns the file's path
    (or a note that the detail was logged, when no file could be written)."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    text = "".join([f"=== {stamp} process {jax.process_index()}: {headline}\n",
                    *traceback.format_exception(err), *(line.rstrip("\n") + "\n"
                                                        for line in extra), "\n"])
    places = [] if "://" in os.fspath(directory) else [os.path.join(directory, DETAIL_LOG)]
    places.append(os.path.join(tempfile.gettempdir(), f"flantune-{DETAIL_LOG}"))
    for place in places:
        try:
            with open(place, "a", encoding="utf-8") as file:
                file.write(text)
            return place
        except OSError:
            continue
    logging.getLogger(__name__).error("%s", text)
    return "the log output above (no file could be written)"


def size_text(n: float) -> str:
    """Bytes as GiB, with enough digits for small sizes."""
    gib = n / 2**30
    return f"{gib:.2f} GiB" if gib >= 0.01 or gib == 0 else f"{gib:.2g} GiB"


class DiskFullLogFilter(logging.Filter):
    """Holds back orbax's own log records of a full disk (a traceback per array and thread);
    the checkpointer raises one error instead and writes the held records to DETAIL_LOG
    (`take`), or logs them again at close if no error took them."""

    def __init__(self) -> None:
        super().__init__()
        self._held: list[str] = []
        self._lock = threading.Lock()
        self._formatter = logging.Formatter("%(levelname)s %(name)s: %(message)s")

    def filter(self, record: logging.LogRecord) -> bool:
        err = record.exc_info[1] if record.exc_info else None
        if not (is_disk_full(err) or _DISK_FULL_TEXT.search(record.getMessage())):
            return True
        with self._lock:
            if len(self._held) < _MAX_HELD_RECORDS:
                self._held.append(self._formatter.format(record))
        return False

    def take(self) -> list[str]:
        """The held records, forgotten here."""
        with self._lock:
            held, self._held = self._held, []
        return held
