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
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from types import TracebackType

import jax

DETAIL_LOG = "checkpoint_errors.log"
_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_DISK_FULL_TEXT = re.compile(r"No space left on device|Disk quota exceeded|os_error_code='("
                             + "|".join(str(n) for n in _DISK_FULL_ERRNOS) + ")'")
_OS_ERROR_TEXT = re.compile(r"\[os_error_code='(\d+)'\]|\[Errno (\d+)\]")
_SPEC = re.compile(r"\s*\[tensorstore_spec='.*?'\]|\s*See full TensorStore details:.*",
                   re.DOTALL)
_LOCAL_FILE = re.compile(r'(?:local file|Failed writing:) "([^"]+)"')
_ARRAY = re.compile(r'Error (?:reading|writing) "([^"/]+)/')
_STATUS = re.compile(r"^([A-Z_]{4,}): ")
_MAX_REASON = 200
_MAX_HELD_RECORDS = 200
_last_detail: dict[str, str | None] = {"path": None}  # the DETAIL_LOG last written


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


def _most_specific(err: BaseException) -> BaseException:
    """The first error along `err`'s causes that carries a TensorStore status (orbax wraps
    them in errors that only print the TensorStore spec), else `err`."""
    current: BaseException | None = err
    for _ in range(16):
        if current is None:
            break
        if _STATUS.match(_SPEC.sub("", str(current)).strip()):
            return current
        current = current.__cause__ or current.__context__
    return err


def summary(err: BaseException) -> str:
    """One line about `err`: the array and file TensorStore names, and the innermost reason,
    without the TensorStore spec."""
    err = _most_specific(err)
    text = _SPEC.sub("", str(err)).strip()
    parts = []
    array = _ARRAY.search(text)
    if array:
        parts.append(f"array {array.group(1)}")
    files = _LOCAL_FILE.findall(text)
    if files:
        parts.append(f"file {files[-1]}")
    status = _STATUS.match(text)
    if status:  # "CODE: context: context: reason": the code and the innermost reason
        reason = " ".join(text.split(": ")[-1].split())
        if not reason.startswith(status.group(1)):
            reason = f"{status.group(1)}: {reason}"
    else:
        reason = " ".join(text.split()) or type(err).__name__
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
            _last_detail["path"] = place
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


def _from_closed_loop(err: BaseException | None, tb: TracebackType | None) -> bool:
    """Whether `err` is asyncio's 'Event loop is closed', raised in call_soon_threadsafe."""
    if not (isinstance(err, RuntimeError) and str(err) == "Event loop is closed"):
        return False
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "call_soon_threadsafe":
            return True
        tb = tb.tb_next
    return False


def _abandoned_orbax_coroutine(unraisable: sys.UnraisableHookArgs) -> bool:
    """Whether an unraisable exception is that of an orbax coroutine finalized after orbax gave
    up on it (the other reads of a restore one of whose reads failed)."""
    code = getattr(unraisable.object, "cr_code", None)
    return code is not None and f"{os.sep}orbax{os.sep}checkpoint{os.sep}" in code.co_filename


def quiet_closed_loop_callbacks() -> None:
    """Installs (once) an unraisable-exception hook for what orbax leaves behind after a failed
    read or write: asyncio's 'Event loop is closed' from call_soon_threadsafe (TensorStore
    completing I/O that orbax gave up on, after closing its event loop) and the errors of the
    orbax coroutines it abandoned (~50 lines of TensorStore spec each). Python would print a
    traceback for each, hundreds after a full disk or a damaged checkpoint, after flantune's
    own error has said what failed; the coroutines' errors are appended to the DETAIL_LOG last
    written, as one line each. Every other unraisable exception goes to the previous hook."""
    previous = sys.unraisablehook
    if getattr(previous, "flantune_quiet", False):
        return

    def hook(unraisable: sys.UnraisableHookArgs) -> None:
        if _from_closed_loop(unraisable.exc_value, unraisable.exc_traceback):
            return
        if _abandoned_orbax_coroutine(unraisable) and _last_detail["path"]:
            try:
                with open(_last_detail["path"], "a", encoding="utf-8") as file:
                    file.write(f"abandoned orbax read/write: {summary(unraisable.exc_value)}\n")
                return
            except OSError:
                pass
        previous(unraisable)

    hook.flantune_quiet = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook
