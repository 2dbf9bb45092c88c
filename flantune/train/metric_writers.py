"""Metrics out of the loop: TensorBoard event files and a live console progress bar.

Only process 0 writes; other processes get no-op writers.
"""

from __future__ import annotations

import json
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

METRICS_JSONL = "metrics.jsonl"


def read_metrics(path: str | os.PathLike) -> dict[int, dict[str, float]]:
    """Step -> scalars from a ``metrics.jsonl`` written by :class:`MetricWriter`."""
    by_step: dict[int, dict[str, float]] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                by_step[int(row.pop("step"))] = row
            except (ValueError, KeyError) as err:
                raise ValueError(f"{path}:{number}: not a metrics line ({err}).") from None
    return dict(sorted(by_step.items()))


class MetricWriter:
    """Scalars to TensorBoard under ``{model_dir}/{name}`` (``train``, ``eval``, ...), mirrored
    as JSON lines in ``{model_dir}/{name}/metrics.jsonl`` for scripts and reports (one
    ``{"step": s, ...}`` object per write; after a resume a step may appear again: the last
    line for a step wins)."""

    def __init__(self, model_dir: str | os.PathLike | None, name: str = "train",
                 enabled: bool = True):
        active = bool(enabled and model_dir)
        self._writer = SummaryWriter(os.path.join(model_dir, name)) if active else None
        self._jsonl = os.path.join(model_dir, name, METRICS_JSONL) if active else None

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        if self._writer is None:
            return
        for key, value in values.items():
            self._writer.add_scalar(key, float(value), step)
        self._writer.flush()
        with open(self._jsonl, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": int(step), **{k: float(v) for k, v in values.items()}})
                    + "\n")

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
