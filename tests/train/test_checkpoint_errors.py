"""Checkpoint error text: one-line summaries of TensorStore errors, full-disk detection, the
detail log, and the hook that keeps orbax's leftovers of a failed read off the console."""

from __future__ import annotations

import asyncio
import errno
import sys
import types

import pytest

from flantune.train import checkpoint_errors
from flantune.train.checkpoint_errors import (
    DETAIL_LOG,
    is_disk_full,
    is_os_error,
    quiet_closed_loop_callbacks,
    summary,
    write_detail,
)

SPEC = "[tensorstore_spec='{\"driver\":\"zarr\",\"kvstore\":{\"path\":\"/m/2/state/\"}}']"
READ_ERROR = ('OUT_OF_RANGE: Error reading "params.w/0.0" in OCDBT database at local file '
              '"/m/2/state/": Error reading Byte range [0, 9) of local file "/m/2/state/d/ab12": '
              f"Requested byte range [0, 9) is not valid for value of size 4 {SPEC}")


def _orbax_wrapped(inner: Exception) -> Exception:
    """An error as orbax raises it around TensorStore's: only the spec in its own text."""
    try:
        try:
            raise inner
        except Exception as err:
            raise Exception("Encountered error while reading array index: (). See full "
                            "TensorStore details: <bound method spec of TensorStore({\n"
                            "  'driver': 'zarr',\n})>.") from err
    except Exception as outer:
        return outer


def test_summary_names_array_file_and_reason_without_the_spec():
    assert summary(ValueError(READ_ERROR)) == (
        "array params.w, file /m/2/state/d/ab12, ValueError: OUT_OF_RANGE: Requested byte "
        "range [0, 9) is not valid for value of size 4")
    wrapped = summary(_orbax_wrapped(ValueError(READ_ERROR)))
    assert wrapped == summary(ValueError(READ_ERROR)) and "\n" not in wrapped
    assert summary(FileNotFoundError("no such file: /m/2/x")) == (
        "FileNotFoundError: no such file: /m/2/x")


def test_a_full_disk_is_recognized_in_every_form():
    tensorstore = ValueError("RESOURCE_EXHAUSTED: Failed to write 5 bytes to file 17: No space "
                             "left on device [os_error_code='28']")
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(tensorstore) and is_disk_full(_orbax_wrapped(tensorstore))
    assert is_disk_full(ExceptionGroup("writes", [KeyError("x"), tensorstore]))
    assert not is_disk_full(ValueError(READ_ERROR))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert is_os_error(OSError(errno.EACCES, "Permission denied"))
    assert not is_os_error(KeyError("x"))


def test_detail_goes_to_model_dir_or_else_the_temporary_directory(tmp_path, monkeypatch):
    try:
        raise ValueError(READ_ERROR)
    except ValueError as err:
        error = err
    path = write_detail(tmp_path, "checkpoint step 2 cannot be read", error, ["extra line"])
    assert path == str(tmp_path / DETAIL_LOG)
    text = (tmp_path / DETAIL_LOG).read_text()
    assert "checkpoint step 2 cannot be read" in text and SPEC in text and "extra line" in text
    monkeypatch.setattr(checkpoint_errors.tempfile, "gettempdir", lambda: str(tmp_path / "t"))
    (tmp_path / "t").mkdir()
    elsewhere = write_detail(tmp_path / "missing" / "dir", "headline", error)
    assert elsewhere == str(tmp_path / "t" / f"flantune-{DETAIL_LOG}")


def _unraisable(exc: BaseException, obj: object) -> sys.UnraisableHookArgs:
    return types.SimpleNamespace(exc_type=type(exc), exc_value=exc,
                                 exc_traceback=exc.__traceback__, err_msg=None, object=obj)


def test_the_hook_drops_only_orbax_leftovers(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    quiet_closed_loop_callbacks()
    quiet_closed_loop_callbacks()  # installed once
    hook = sys.unraisablehook
    assert hook is not seen.append and getattr(hook, "flantune_quiet", False)
    loop = asyncio.new_event_loop()
    loop.close()
    try:
        loop.call_soon_threadsafe(print)
    except RuntimeError as err:
        closed = err
    hook(_unraisable(closed, None))
    write_detail(tmp_path, "step 2 cannot be read", ValueError("x"))
    coroutine = types.SimpleNamespace(cr_code=types.SimpleNamespace(
        co_filename="/site-packages/orbax/checkpoint/_src/serialization/serialization.py"))
    hook(_unraisable(_orbax_wrapped(ValueError(READ_ERROR)), coroutine))
    other = RuntimeError("something else")
    hook(_unraisable(other, None))
    assert [u.exc_value for u in seen] == [other]
    assert "abandoned orbax read/write: array params.w" in (tmp_path / DETAIL_LOG).read_text()


@pytest.mark.parametrize("record_exc", [OSError(errno.ENOSPC, "No space left on device"),
                                        KeyError("unrelated")])
def test_the_log_filter_holds_back_only_full_disk_records(record_exc):
    import logging

    log_filter = checkpoint_errors.DiskFullLogFilter()
    record = logging.LogRecord("absl", logging.ERROR, __file__, 1, "commit failed", None,
                               (type(record_exc), record_exc, None))
    passed = log_filter.filter(record)
    held = log_filter.take()
    if isinstance(record_exc, OSError):
        assert not passed and len(held) == 1 and "No space left" in held[0]
    else:
        assert passed and held == []
