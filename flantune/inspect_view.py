"""Prints a :class:`~flantune.data.report.MixtureReport` as rich tables, and the task library
(every registered flantune task with its cluster, templates, metrics and data)."""

from __future__ import annotations

import dataclasses

from rich.console import Console
from rich.table import Table
from rich.text import Text

from flantune.data.report import MixtureReport
from flantune.data.tasks import registered_flan_tasks


def _lengths(triple: tuple[int, int, int]) -> str:
    return "/".join(str(v) for v in triple)


def print_report(report: MixtureReport, console: Console | None = None) -> None:
    console = console or Console(width=max(Console().width, 170))
    lengths = ", ".join(f"{k}={v}" for k, v in report.task_feature_lengths.items())
    console.print(f"[bold]{report.name}[/bold]: {len(report.members)} tasks, split "
                  f"'{report.split}', {report.num_examples} sampled examples, "
                  f"feature lengths {lengths}")
    if len(report.structure) > 1 or report.structure[0][0] != report.name:
        console.print("members: " + "; ".join(f"{m} ({r})" for m, r in report.structure))

    table = Table(show_lines=False, header_style="bold")
    for column in ("task", "rate", "expected", "realized", "n", "inputs p50/p95/max",
                   "targets p50/p95/max", "trained/total tokens", "truncated", "skipped"):
        table.add_column(column, justify="left" if column == "task" else "right",
                         no_wrap=column == "task")
    for m in report.members:
        table.add_row(m.task, f"{m.rate:.4g}", f"{100 * m.expected_share:.2f}%",
                      f"{100 * m.realized_share:.2f}%", str(m.realized_count),
                      _lengths(m.input_lengths), _lengths(m.target_lengths),
                      _trained(m.trained_tokens, m.total_tokens), str(m.truncated),
                      str(len(m.skipped)))
    total_truncated = sum(m.truncated for m in report.members)
    skipped = [(m.task, *entry) for m in report.members for entry in m.skipped]
    table.add_section()
    table.add_row("total", "", "100.00%",
                  f"{100 * sum(m.realized_share for m in report.members):.2f}%",
                  str(sum(m.realized_count for m in report.members)), "", "",
                  _trained(sum(m.trained_tokens for m in report.members),
                           sum(m.total_tokens for m in report.members)),
                  str(total_truncated), str(len(skipped)))
    console.print(table)
    if skipped:
        first = "; ".join(f"{task}: {where}: {why}" for task, where, why in skipped[:5])
        console.print(Text.assemble((f"{len(skipped)} bad record(s) left out of split "
                                     f"'{report.split}' under on_bad_record='skip'.", "yellow"),
                                    f" First: {first}"), highlight=False)
    worst = max(report.members, key=lambda m: abs(m.realized_share - m.expected_share))
    console.print(f"largest share gap: {worst.task} "
                  f"{100 * (worst.realized_share - worst.expected_share):+.3f} points; "
                  f"{total_truncated} of {report.num_examples} examples would be truncated.")
    for i, example in enumerate(report.examples):
        console.rule(f"example {i + 1}: {example['task']}  template={example['template']}  "
                     f"exemplars={example.get('num_exemplars', 0)}")
        if "conversation" in example:
            console.print(conversation_text(example), highlight=False)
            continue
        if "chosen" in example:  # a preference pair
            for part in ("prompt", "chosen", "rejected"):
                tokens = f" ({example[part + '_tokens']} tokens)"
                console.print(f"[bold]{part}{tokens}:[/bold]", markup=True)
                console.print(example[part], markup=False, highlight=False)
            continue
        console.print("[bold]inputs:[/bold]", markup=True)
        console.print(example["inputs"], markup=False, highlight=False)
        console.print("[bold]targets:[/bold]", markup=True)
        console.print(example["targets"], markup=False, highlight=False)


def _trained(trained: int, total: int) -> str:
    return f"{trained}/{total} ({100 * trained / total:.0f}%)" if total else "0/0"


TRAINED_STYLE = "bold green"


def conversation_text(example: dict) -> Text:
    """A rendered conversation with the tokens the loss is on in bold green (the loss mask
    made visible), and a legend with their count."""
    text, mask = example["conversation"], example["loss_mask"]
    out = Text()
    position = 0
    for (start, end), trained in zip(example["offsets"], mask, strict=True):
        if start > position:  # text no token covers (rare: normalizers may drop characters)
            out.append(text[position:start])
        if end > start:
            out.append(text[max(start, position):end], style=TRAINED_STYLE if trained else "")
        position = max(position, end)
    out.append(text[position:])
    legend = Text(f"\n[{int(sum(mask))} of {len(mask)} tokens trained, shown in ")
    legend.append(TRAINED_STYLE, style=TRAINED_STYLE)
    legend.append("]")
    return out + legend


# --------------------------------------------------------------------------- the task library


@dataclasses.dataclass(frozen=True)
class LibraryRow:
    """One registered flantune task as ``flantune inspect --library`` lists it."""

    task: str
    cluster: str
    source: str
    templates: int
    variants: tuple[str, ...]
    metrics: tuple[str, ...]
    data: str  # "yes", "no" (TFDS dataset not prepared) or "-" (not a TFDS source)


def _tfds_prepared(name: str) -> str:
    """Whether TFDS finds ``name`` prepared where it looks ($TFDS_DATA_DIR); reads no data."""
    import tensorflow_datasets as tfds

    try:
        return "yes" if tfds.builder(name).is_prepared() else "no"
    except Exception as err:  # noqa: BLE001 - shown in the table instead of failing the listing
        return f"unknown ({type(err).__name__})"


def library_rows(cluster: str | None = None) -> list[LibraryRow]:
    """Every registered flantune task (of ``cluster``), sorted by cluster and name."""
    rows = []
    for flan_task in registered_flan_tasks():
        if cluster is not None and flan_task.cluster != cluster:
            continue
        tfds_name = getattr(flan_task.source_fn, "tfds_name", None)
        rows.append(LibraryRow(
            task=flan_task.name, cluster=flan_task.cluster or "-",
            source=f"tfds:{tfds_name}" if tfds_name else flan_task.source_fn.__qualname__,
            templates=len(flan_task.templates),
            variants=tuple(v.suffix for v in flan_task.variants),
            metrics=tuple(getattr(fn, "__name__", repr(fn)) for fn in flan_task.metric_fns),
            data=_tfds_prepared(tfds_name) if tfds_name else "-"))
    return sorted(rows, key=lambda r: (r.cluster, r.task))


def print_library(rows: list[LibraryRow], console: Console | None = None) -> None:
    console = console or Console(width=max(Console().width, 170))
    table = Table(header_style="bold")
    for column in ("task", "cluster", "source", "templates", "variants", "metrics", "data"):
        table.add_column(column, no_wrap=column != "metrics",
                         justify="right" if column == "templates" else "left")
    for row in rows:
        table.add_row(row.task, row.cluster, row.source, str(row.templates),
                      ",".join(row.variants), ", ".join(row.metrics), row.data)
    console.print(table)
    missing = [r for r in rows if r.data == "no"]
    clusters = sorted({r.cluster for r in rows})
    console.print(f"{len(rows)} tasks in {len(clusters)} clusters; "
                  f"{len(missing)} TFDS datasets not prepared locally"
                  + (" (prepare one with `tfds build NAME`; TFDS looks in $TFDS_DATA_DIR, "
                     "default ~/tensorflow_datasets)." if missing else "."))
