"""Stopping cleanly on SIGTERM / SIGINT: finish the step, save, exit.

The handler only records the request; the loop checks it after each step. With several
processes, all of them must stop at the same step (they save one checkpoint together): the
check then goes through JAX's preemption sync point, which the coordinator uses to agree on a
step once any process has been signalled.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

import jax
from jax.experimental import multihost_utils

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """Installs handlers for SIGTERM and SIGINT while active (a context manager)."""

    def __init__(self):
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        del frame
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            # With several processes JAX's coordination service handles SIGTERM itself (its
            # preemption notifier); replacing its handler would hide the notice.
            signals = STOP_SIGNALS if jax.process_count() == 1 else (signal.SIGINT,)
            for sig in signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def should_stop(self, step: int) -> bool:
        """Whether to save and stop after ``step`` (the same answer on every process)."""
        if jax.process_count() == 1:
            return self.signal_name is not None
        # JAX's coordination service turns a SIGTERM on any process into a common step.
        return bool(multihost_utils.reached_preemption_sync_point(step))
