"""One run per MODEL_DIR: the lock names its owner; a dead owner's lock is taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from flantune.train.run_lock import LOCK_FILE, RunLock, RunLockError


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_second_run_fails_naming_the_owner(tmp_path):
    with RunLock(tmp_path) as first:
        owner = json.loads((tmp_path / LOCK_FILE).read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        with pytest.raises(RunLockError) as err:
            RunLock(tmp_path).acquire()
        message = str(err.value)
        assert f"pid {os.getpid()}" in message and socket.gethostname() in message
        assert str(tmp_path) in message and "another MODEL_DIR" in message
        assert first.path.exists()
    assert not (tmp_path / LOCK_FILE).exists()  # released


def test_a_dead_process_lock_on_this_host_is_taken_over_with_a_message(tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps(
        {"host": socket.gethostname(), "pid": _dead_pid(), "pid_start": None,
         "started": "earlier"}))
    said = []
    with RunLock(tmp_path, show=said.append):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert len(said) == 1 and "that process no longer runs" in said[0]


def test_a_reused_pid_is_not_the_owner(tmp_path):
    """The pid runs, but started at another time than the lock's owner: a reused pid."""
    (tmp_path / LOCK_FILE).write_text(json.dumps(
        {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": "1",
         "started": "earlier"}))
    said = []
    with RunLock(tmp_path, show=said.append):
        pass
    assert said and "no longer runs" in said[0]


def test_another_host_is_judged_by_its_heartbeat(tmp_path):
    lock = tmp_path / LOCK_FILE
    lock.write_text(json.dumps({"host": "elsewhere", "pid": 1, "started": "earlier"}))
    with pytest.raises(RunLockError, match=f"If that run is dead, delete {lock}"):
        RunLock(tmp_path, stale_after_seconds=600).acquire()
    old = time.time() - 3600
    os.utime(lock, (old, old))
    said = []
    with RunLock(tmp_path, stale_after_seconds=600, show=said.append):
        pass
    assert said and "heartbeat stopped" in said[0]


def test_the_owner_keeps_its_heartbeat(tmp_path):
    lock = tmp_path / LOCK_FILE
    with RunLock(tmp_path, heartbeat_seconds=0.05):
        old = time.time() - 3600
        os.utime(lock, (old, old))
        deadline = time.time() + 30
        while lock.stat().st_mtime < time.time() - 60 and time.time() < deadline:
            time.sleep(0.05)
        assert lock.stat().st_mtime > time.time() - 60
