"""Multi-process runs: notice a dead peer and stop, instead of hanging in a collective.

When a process of a multi-process run dies, the others block in the next collective until
JAX's coordination service misses the dead process's heartbeats and aborts them with a C++
stack trace. The watchdog gives the same guarantee sooner and readably: every process
publishes a heartbeat counter in the coordination service's key-value store; a background
thread watches the others' counters and, when one stops advancing for `timeout_seconds` (or
the coordinator itself cannot be reached), prints which process stopped and what to do, and
exits this process. A process that finishes normally marks itself done first, so its peers do
not take a clean exit for a death.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable

import jax

EXIT_PEER_LOST = 75  # EX_TEMPFAIL: rerun the same command (on every process) to resume
_DONE = "done"


def _client():
    from jax._src import distributed

    return distributed.global_state.client


def _default_exit(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
    os._exit(EXIT_PEER_LOST)


class PeerWatchdog:
    """Heartbeats through the coordination service; `on_failure(message)` (default: print and
    exit with code 75) runs on the watchdog thread when a peer is lost."""

    def __init__(self, timeout_seconds: float = 60.0, interval_seconds: float = 2.0, *,
                 on_failure: Callable[[str], None] = _default_exit, namespace: str = "flantune"):
        if timeout_seconds <= interval_seconds:
            raise ValueError(f"timeout_seconds={timeout_seconds} must exceed "
                             f"interval_seconds={interval_seconds}.")
        self.timeout, self.interval, self.on_failure = timeout_seconds, interval_seconds, on_failure
        self.process, self.count = jax.process_index(), jax.process_count()
        self._prefix = f"{namespace}/heartbeat"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._beats = 0

    def _key(self, process: int) -> str:
        return f"{self._prefix}/{process}"

    def start(self) -> PeerWatchdog:
        if self.count > 1 and self._thread is None:
            self._publish(str(self._beats))
            self._thread = threading.Thread(target=self._run, name="flantune-peer-watchdog",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Marks this process done (peers stop watching it) and ends the thread."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        try:
            self._publish(_DONE)
        except Exception:  # noqa: BLE001 - the coordinator may already be gone at exit
            pass

    def __enter__(self) -> PeerWatchdog:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _publish(self, value: str) -> None:
        _client().key_value_set(self._key(self.process), value, allow_overwrite=True)

    def _run(self) -> None:
        now = time.monotonic()
        seen = {p: ("", now) for p in range(self.count) if p != self.process}
        while not self._stop.wait(self.interval):
            self._beats += 1
            try:
                self._publish(str(self._beats))
                values = {p: self._peer_value(p) for p in seen}
            except Exception as err:  # noqa: BLE001 - any failure means the coordinator is gone
                self.on_failure(
                    f"flantune: process {self.process} lost contact with the coordinator "
                    f"(process 0) of this {self.count}-process run ({type(err).__name__}: "
                    f"{err}). Process 0 probably died; see its log. Stopping this process; "
                    "restart every process with the same command to resume from the last "
                    "checkpoint.")
                return
            now = time.monotonic()
            for peer, value in values.items():
                last_value, since = seen[peer]
                if value == _DONE:
                    continue
                if value != last_value:
                    seen[peer] = (value, now)
                elif now - since > self.timeout:
                    self.on_failure(
                        f"flantune: process {peer} of this {self.count}-process run sent no "
                        f"heartbeat for {now - since:.0f} s (limit {self.timeout:.0f} s): it "
                        "died or hangs; see its log. Stopping process "
                        f"{self.process} so it does not wait forever in a collective; restart "
                        "every process with the same command to resume from the last "
                        "checkpoint.")
                    return

    def _peer_value(self, peer: int) -> str:
        try:
            return _client().key_value_try_get(self._key(peer))
        except Exception as err:  # noqa: BLE001
            if "NOT_FOUND" in str(err) or "not found" in str(err).lower():
                return ""  # not started yet: counts as no heartbeat
            raise
