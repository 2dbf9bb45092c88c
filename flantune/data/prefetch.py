"""Reads batches ahead in a background thread, so data work overlaps the train step.

Each item comes with the iterator state *after* that batch, so a checkpoint saved after
consuming it records exactly where the stream stands. (The jitted step releases the GIL while it
runs, which is when the thread renders, tokenizes and packs the next window.)
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import numpy as np

from flantune.data.batches import BatchIterator

_DONE = object()


class Prefetcher(Iterator[tuple[dict[str, np.ndarray], str]]):
    """``(batch, state_json)`` pairs from a BatchIterator, ``buffer_size`` batches ahead."""

    def __init__(self, iterator: BatchIterator, buffer_size: int = 2):
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, got {buffer_size}.")
        self.iterator = iterator
        self._queue: queue.Queue = queue.Queue(maxsize=buffer_size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, name="flantune-prefetch", daemon=True)
        self._thread.start()

    def _fill(self) -> None:
        try:
            while not self._stop.is_set():
                batch = next(self.iterator)
                item = (batch, self.iterator.get_state().to_json())
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, raised there
            self._queue.put(err)
        else:
            self._queue.put(_DONE)

    def __next__(self) -> tuple[dict[str, np.ndarray], str]:
        item = self._queue.get()
        if item is _DONE:
            raise StopIteration
        if isinstance(item, BaseException):
            self.close()
            raise item
        return item

    def close(self) -> None:
        """Stops the thread (the iterator's own position is past what was consumed)."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get_nowait()
            except queue.Empty:
                pass
            self._thread.join(timeout=0.05)

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
