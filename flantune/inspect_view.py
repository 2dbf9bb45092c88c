"""Prints a :class:`~flantune.data.report.MixtureReport` as rich tables."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from flantune.data.report import MixtureReport


def _lengths(triple: tuple[int, int, int]) -> str:
    return "/".join(str(v) for v in triple)


def print_report(report: MixtureReport, console: Console | None = None) -> None:
    console = console or Console(width=max(Console().width, 140))
    lengths = ", ".join(f"{k}={v}" for k, v in report.task_feature_lengths.items())
    console.print(f"[bold]{report.name}[/bold]: {len(report.members)} tasks, split "
                  f"'{report.split}', {report.num_examples} sampled examples, "
                  f"feature lengths {lengths}")
    if len(report.structure) > 1 or report.structure[0][0] != report.name:
        console.print("members: " + "; ".join(f"{m} ({r})" for m, r in report.structure))

    table = Table(show_lines=False, header_style="bold")
    for column in ("task", "rate", "expected", "realized", "n", "inputs p50/p95/max",
                   "targets p50/p95/max", "truncated"):
        table.add_column(column, justify="left" if column == "task" else "right",
                         no_wrap=column == "task")
    for m in report.members:
        table.add_row(m.task, f"{m.rate:.4g}", f"{100 * m.expected_share:.2f}%",
                      f"{100 * m.realized_share:.2f}%", str(m.realized_count),
                      _lengths(m.input_lengths), _lengths(m.target_lengths), str(m.truncated))
    total_truncated = sum(m.truncated for m in report.members)
    table.add_section()
    table.add_row("total", "", "100.00%",
                  f"{100 * sum(m.realized_share for m in report.members):.2f}%",
                  str(sum(m.realized_count for m in report.members)), "", "",
                  str(total_truncated))
    console.print(table)
    worst = max(report.members, key=lambda m: abs(m.realized_share - m.expected_share))
    console.print(f"largest share gap: {worst.task} "
                  f"{100 * (worst.realized_share - worst.expected_share):+.3f} points; "
                  f"{total_truncated} of {report.num_examples} examples would be truncated.")
    for i, example in enumerate(report.examples):
        console.rule(f"example {i + 1}: {example['task']}  template={example['template']}  "
                     f"exemplars={example.get('num_exemplars', 0)}")
        console.print("[bold]inputs:[/bold]", markup=True)
        console.print(example["inputs"], markup=False, highlight=False)
        console.print("[bold]targets:[/bold]", markup=True)
        console.print(example["targets"], markup=False, highlight=False)
