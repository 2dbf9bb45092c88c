"""One training run per MODEL_DIR: a lock file naming its owner.

Two runs writing into one MODEL_DIR overwrite each other's checkpoints. The lock is
``MODEL_DIR/flantune.lock``, created exclusively, holding the owner's host, pid, the pid's start
time (so a reused pid is not mistaken for the owner) and when it was taken; the owner touches it
every ``HEARTBEAT_SECONDS`` while it runs. A second run fails at once, naming the owner. A lock
left by a dead process is taken over with a message: on the same host when the pid no longer
runs (or runs another program), on another host when its heartbeat is older than
``stale_after_seconds`` (a run killed without warning on one host of a pod, restarted on another).
Only process 0 of a multi-process run takes the lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

LOCK_FILE = "flantune.lock"
HEARTBEAT_SECONDS = 30.0
STALE_AFTER_SECONDS = 600.0


class RunLockError(RuntimeError):
    """MODEL_DIR is in use by another run."""


def _process_start(pid: int) -> str | None:
    """The start time of `pid` in clock ticks since boot (Linux /proc), or None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]  # field 22 of stat(5), after "pid (comm)"


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    now = _process_start(pid)
    return start is None or now is None or now == start


class RunLock:
    """``with RunLock(model_dir): ...`` holds MODEL_DIR for this process."""

    def __init__(self, model_dir: str | os.PathLike, *,
                 stale_after_seconds: float = STALE_AFTER_SECONDS,
                 heartbeat_seconds: float = HEARTBEAT_SECONDS,
                 show: Callable[[str], None] = print):
        self.path = Path(model_dir) / LOCK_FILE
        self.stale_after, self.heartbeat, self.show = stale_after_seconds, heartbeat_seconds, show
        self.owner = {"host": socket.gethostname(), "pid": os.getpid(),
                      "pid_start": _process_start(os.getpid()),
                      "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- taking and releasing ----------------------------------------------------------
    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # a stale lock removed, then raced by another taker: try again
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.owner, f)
            self._thread = threading.Thread(target=self._beat, name="flantune-run-lock",
                                            daemon=True)
            self._thread.start()
            return
        raise RunLockError(f"Could not take the lock {self.path}: other runs keep taking it.")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._read() == self.owner:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    # -- another owner -----------------------------------------------------------------
    def _read(self) -> dict | None:
        return self._read_path(self.path)

    @staticmethod
    def _read_path(path: Path) -> dict | None:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # being written, or damaged: judged by its age alone

    def _take_over_if_stale(self) -> None:
        owner = self._read()
        if owner is None:
            return  # released meanwhile
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return
        who = (f"host {owner.get('host', '?')}, pid {owner.get('pid', '?')}, started "
               f"{owner.get('started', '?')}")
        same_host = owner.get("host") == self.owner["host"]
        if same_host and isinstance(owner.get("pid"), int):
            stale = not _alive(owner["pid"], owner.get("pid_start"))
            why = "that process no longer runs"
        else:
            stale = age > self.stale_after
            why = f"its heartbeat stopped {age:.0f} s ago"
        if not stale:
            where = ("" if same_host else f" If that run is dead, delete {self.path} (it is "
                     f"taken over by itself {self.stale_after:.0f} s after its last heartbeat).")
            raise RunLockError(
                f"MODEL_DIR {self.path.parent} is in use by another flantune run ({who}; lock "
                f"file {self.path}). Wait for it to finish, or train into another MODEL_DIR."
                + where)
        # Move the stale lock aside atomically; if it is not the one judged stale (another
        # starter replaced it meanwhile), put it back and let the next attempt judge it.
        aside = self.path.with_name(f"{LOCK_FILE}.stale-{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        if self._read_path(aside) != owner:
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.path)
            aside.unlink()
            return
        aside.unlink()
        self.show(f"Took over the lock of a run that is gone ({who}: {why}); {self.path}.")
