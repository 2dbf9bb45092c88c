"""Metrics out of the loop: TensorBoard event files and a live console progress bar.

Only process 0 writes; other processes get no-op writers.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from tensorboardX import SummaryWriter


class MetricWriter:
    """Scalars to TensorBoard under ``{model_dir}/{name}`` (``train``, ``eval``, ...)."""

    def __init__(self, model_dir: str | os.PathLike | None, name: str = "train",
                 enabled: bool = True):
        self._writer = SummaryWriter(os.path.join(model_dir, name)) if (enabled and model_dir) \
            else None

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        if self._writer is None:
            return
        for key, value in values.items():
            self._writer.add_scalar(key, float(value), step)
        self._writer.flush()

    def text(self, step: int, tag: str, text: str) -> None:
        if self._writer is not None:
            self._writer.add_text(tag, text, step)
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


class ProgressBar:
    """step n/N, loss, tokens/s and ETA in the console (rich), on process 0 only."""

    def __init__(self, total_steps: int, start_step: int, enabled: bool = True,
                 console: Console | None = None):
        self.enabled = enabled
        self._progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]} tok/s"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=console, transient=False, disable=not enabled)
        self._task = self._progress.add_task("train", total=total_steps, completed=start_step,
                                             loss="-", speed="-")

    def __enter__(self) -> ProgressBar:
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    def update(self, step: int, loss: float | None = None, tokens_per_s: float | None = None):
        fields = {}
        if loss is not None:
            fields["loss"] = f"{loss:.4f}"
        if tokens_per_s is not None:
            fields["speed"] = f"{tokens_per_s:,.0f}"
        self._progress.update(self._task, completed=step, **fields)

    def print(self, *args, **kwargs) -> None:
        self._progress.console.print(*args, **kwargs)


class Throughput:
    """Tokens per second over the steps since the last report (excludes compile time)."""

    def __init__(self):
        self._since = time.perf_counter()
        self._tokens = 0.0

    def add(self, tokens: float) -> None:
        self._tokens += tokens

    def report(self) -> tuple[float, float]:
        """(tokens/s, seconds) since the last report; resets."""
        now = time.perf_counter()
        seconds = max(now - self._since, 1e-9)
        rate = self._tokens / seconds
        self._since, self._tokens = now, 0.0
        return rate, seconds


def per_task_losses(task_names: Sequence[str], loss_sums: np.ndarray,
                    token_counts: np.ndarray) -> dict[str, float]:
    """Mean token loss per mixture member, for members that had tokens."""
    return {f"task_loss/{name}": float(loss_sums[i] / token_counts[i])
            for i, name in enumerate(task_names) if token_counts[i] > 0}
