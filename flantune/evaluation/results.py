"""Evaluation results: per-task metrics and predictions, written as JSON, markdown, JSONL and a
console table."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

from rich.table import Table


@dataclasses.dataclass
class TaskResult:
    """One task's outcome. ``errors`` name what failed (the task, or one metric); ``warnings``
    report suspicious but scored input such as empty predictions."""

    task: str
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    num_examples: int = 0
    method: str = ""  # "generate" or "rank" (rank classification over answer options)
    predictions: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "num_examples": self.num_examples,
                "method": self.method, "errors": self.errors, "warnings": self.warnings}


@dataclasses.dataclass
class EvalResults:
    step: int | None
    split: str
    tasks: dict[str, TaskResult]

    def scalars(self) -> dict[str, float]:
        """``{"TASK/METRIC": value}`` for metric writers (finite values only)."""
        return {f"{name}/{metric}": float(value) for name, result in self.tasks.items()
                for metric, value in result.metrics.items() if math.isfinite(float(value))}

    @property
    def failed(self) -> list[str]:
        return [name for name, result in self.tasks.items() if result.errors]

    def to_json(self) -> str:
        return json.dumps({"step": self.step, "split": self.split,
                           "tasks": {n: r.summary() for n, r in self.tasks.items()}}, indent=1)

    def markdown(self) -> str:
        metrics = _metric_names(self)
        head = f"Evaluation at step {self.step}" if self.step is not None else "Evaluation"
        lines = [f"# {head} ({self.split} split)", "",
                 "| task | examples | method | " + " | ".join(metrics) + " |",
                 "|---|---:|---|" + "---:|" * len(metrics)]
        for name, result in self.tasks.items():
            cells = [_cell(result.metrics.get(m)) for m in metrics]
            lines.append(f"| {name} | {result.num_examples} | {result.method or '-'} | "
                         + " | ".join(cells) + " |")
        notes = [f"- {name}: {message}" for name, result in self.tasks.items()
                 for message in [*result.errors, *result.warnings]]
        if notes:
            lines += ["", "Problems:", "", *notes]
        return "\n".join(lines) + "\n"

    def table(self) -> Table:
        """A rich table of the metrics (for the console)."""
        metrics = _metric_names(self)
        title = f"held-out evaluation, step {self.step}" if self.step is not None else \
            "evaluation"
        table = Table(title=f"{title} ({self.split})")
        table.add_column("task")
        table.add_column("n", justify="right")
        for metric in metrics:
            table.add_column(metric, justify="right")
        table.add_column("status")
        for name, result in self.tasks.items():
            cells = [_cell(result.metrics.get(m)) for m in metrics]
            status = "failed" if result.errors else ("warning" if result.warnings else "ok")
            table.add_row(name, str(result.num_examples), *cells, status)
        return table

    def write(self, output_dir: str, *, predictions: bool = True) -> dict[str, str]:
        """``metrics.json``, ``metrics.md`` and (optionally) ``predictions/TASK.jsonl``."""
        os.makedirs(output_dir, exist_ok=True)
        paths = {"json": os.path.join(output_dir, "metrics.json"),
                 "markdown": os.path.join(output_dir, "metrics.md")}
        with open(paths["json"], "w", encoding="utf-8") as f:
            f.write(self.to_json())
        with open(paths["markdown"], "w", encoding="utf-8") as f:
            f.write(self.markdown())
        if predictions:
            paths["predictions"] = write_predictions(self, os.path.join(output_dir,
                                                                        "predictions"))
        return paths


def write_predictions(results: EvalResults, output_dir: str) -> str:
    """One JSONL file per task, one line per example (t5x's infer output)."""
    os.makedirs(output_dir, exist_ok=True)
    for name, result in results.tasks.items():
        with open(os.path.join(output_dir, f"{name}.jsonl"), "w", encoding="utf-8") as f:
            for row in result.predictions:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return output_dir


def _metric_names(results: EvalResults) -> list[str]:
    names: list[str] = []
    for result in results.tasks.values():
        names += [m for m in result.metrics if m not in names]
    return names


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
