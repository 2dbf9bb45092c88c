"""Multi-process runs: notice a dead peer and stop, instead of hanging in a collective.

When a process of a multi-process run dies, the others block in the next collective until
JAX's coordination service misses the dead process's heartbeats and aborts them with a C++
stack trace. The watchdog gives the same guarantee sooner and readably: every process
publishes a heartbeat counter in the coordination service's key-value store; a background
thread watches the others' counters and, when one stops advancing for `timeout_seconds` (or
the coordinator itself cannot be reached), prints which process stopped and what to do, and
exits this process. A process that finishes normally marks itself done first, so its peers do
not take a clean exit for a death.

JAX's own abort must come later, or the survivors end in a C++ check failure (exit -6) instead of
the message: `initialize_distributed` gives JAX the heartbeat timeout `jax_heartbeat_timeout`
derives from the watchdog's.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections.abc import Callable

import jax

EXIT_PEER_LOST = 75  # EX_TEMPFAIL: rerun the same command (on every process) to resume
DEFAULT_TIMEOUT_SECONDS = 60.0
DEFAULT_INTERVAL_SECONDS = 2.0
# How much later than the watchdog's latest stop JAX's earliest abort comes (a thread that is
# scheduled late, a slow key-value RPC).
JAX_ABORT_MARGIN_SECONDS = 30.0
_DONE = "done"


def _check_timeouts(timeout_seconds: float, interval_seconds: float) -> None:
    if interval_seconds <= 0 or timeout_seconds <= interval_seconds:
        raise ValueError(f"peer timeout {timeout_seconds} s must exceed the heartbeat interval "
                         f"{interval_seconds} s (> 0); e.g. --peer_timeout_seconds=60.")


def detection_bound(timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
                    interval_seconds: float = DEFAULT_INTERVAL_SECONDS) -> float:
    """The latest the watchdog stops after a peer dies: the peer's last counter is seen up to
    one interval after it was published, and the timeout is checked once per interval."""
    return timeout_seconds + 2 * interval_seconds


def jax_heartbeat_timeout(timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
                          interval_seconds: float = DEFAULT_INTERVAL_SECONDS) -> int:
    """`heartbeat_timeout_seconds` for `jax.distributed.initialize` such that JAX aborts the
    survivors of a dead process at least JAX_ABORT_MARGIN_SECONDS after the watchdog stopped them.

    JAX's client sends a heartbeat every heartbeat_timeout / 2; the coordination service
    declares a process dead once its last heartbeat is older than heartbeat_timeout and then
    aborts every process with a C++ check failure. So JAX's abort comes between
    heartbeat_timeout / 2 and heartbeat_timeout after the death, depending on where in the
    heartbeat period it fell: with JAX's default of 100 s, as early as 50 s, which raced the
    watchdog's 60 s. Twice the watchdog's bound plus the margin puts JAX's earliest abort after
    the watchdog's latest stop.
    """
    _check_timeouts(timeout_seconds, interval_seconds)
    return math.ceil(2 * (detection_bound(timeout_seconds, interval_seconds)
                          + JAX_ABORT_MARGIN_SECONDS))


def _client():
    from jax._src import distributed

    return distributed.global_state.client


def _default_exit(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
    os._exit(EXIT_PEER_LOST)


class PeerWatchdog:
    """Heartbeats through the coordination service; `on_failure(message)` (default: print and
    exit with code 75) runs on the watchdog thread when a peer is lost. As a context manager,
    an exception leaving the block counts as a failure (see `stop`)."""

    def __init__(self, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
                 interval_seconds: float = DEFAULT_INTERVAL_SECONDS, *,
                 on_failure: Callable[[str], None] = _default_exit, namespace: str = "flantune"):
        _check_timeouts(timeout_seconds, interval_seconds)
        self.timeout, self.interval, self.on_failure = timeout_seconds, interval_seconds, on_failure
        self.process, self.count = jax.process_index(), jax.process_count()
        self._prefix = f"{namespace}/heartbeat"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._beats = 0
        self._failed_at: float | None = None  # when this process failed (see `stop`)

    def _key(self, process: int) -> str:
        return f"{self._prefix}/{process}"

    def start(self) -> PeerWatchdog:
        if self.count > 1 and self._thread is None:
            self._publish(str(self._beats))
            self._thread = threading.Thread(target=self._run, name="flantune-peer-watchdog",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self, failed: bool = False) -> None:
        """Ends the thread; after a clean finish, marks this process done (peers stop watching
        it).

        With `failed=True` (this process is about to exit with an error), it first waits until
        every peer has sent a heartbeat since, or until one is lost (`on_failure` runs, naming
        it): when a peer dies, the survivors' next collective fails at once ("Connection reset
        by peer"), and exiting with that error would leave this process in JAX's shutdown
        barrier until JAX's heartbeat timeout aborts it. A failed process is not marked done,
        so its peers notice when it exits. The wait takes a few intervals when every peer lives
        (a counter must change between two polls after the failure), and at most about the
        detection bound when one is dead.
        """
        if self._thread is None:
            return
        if failed:
            self._failed_at = time.monotonic()
            self._thread.join(detection_bound(self.timeout, self.interval) + 2 * self.interval)
        self._stop.set()
        self._thread.join()
        self._thread = None
        if failed:
            return
        try:
            self._publish(_DONE)
        except Exception:  # noqa: BLE001 - the coordinator may already be gone at exit
            pass

    def __enter__(self) -> PeerWatchdog:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        self.stop(failed=exc_type is not None)

    def _publish(self, value: str) -> None:
        _client().key_value_set(self._key(self.process), value, allow_overwrite=True)

    def _run(self) -> None:
        now = time.monotonic()
        seen = {p: ("", now) for p in range(self.count) if p != self.process}
        # After a failure: the peers' counters at the first poll after it. A counter read then
        # may predate a peer's death, so only a later change proves that the peer lives.
        baseline: dict[int, str] | None = None
        while not self._stop.wait(self.interval):
            polled_at = time.monotonic()
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
            failed_at = self._failed_at
            if failed_at is not None and polled_at > failed_at:
                if baseline is None:
                    baseline = values
                elif all(value == _DONE or value != baseline[peer]
                         for peer, value in values.items()):
                    return  # every peer lives: the failure is this process's own

    def _peer_value(self, peer: int) -> str:
        try:
            return _client().key_value_try_get(self._key(peer))
        except Exception as err:  # noqa: BLE001
            if "NOT_FOUND" in str(err) or "not found" in str(err).lower():
                return ""  # not started yet: counts as no heartbeat
            raise
