"""The mixture report counts and shows the records a task's source left out."""

from __future__ import annotations

import io

from rich.console import Console

import flantune
from flantune.data import IterableSource, Template
from flantune.data.report import mixture_report
from flantune.inspect_view import print_report

TEMPLATES = [Template("Echo {text}.", "{text}")]


def _records(split):
    for i in range(10):
        yield {"text": f"word{i}"} if i % 4 else {"text": ""}  # items 0, 4 and 8 are empty


@flantune.task("report_skipping", templates=TEMPLATES, few_shot=None)
def report_skipping(split):
    return IterableSource(_records(split), name=f"echo_{split}", fields=["text"],
                          on_bad_record="skip", task="report_skipping")


@flantune.task("report_clean", templates=TEMPLATES, few_shot=None)
def report_clean(split):
    return IterableSource([{"text": "x"}, {"text": "y"}], name="clean")


@flantune.mixture("report_mix", default_rate=1.0)
def report_mix():
    return ["report_skipping", "report_clean"]


def test_skipped_records_are_counted_per_member_and_printed():
    report = mixture_report("report_mix", num_examples=20, num_rendered=0)
    members = {m.task: m for m in report.members}
    assert [where for where, _ in members["report_skipping"].skipped] == [
        "echo_train item 0", "echo_train item 4", "echo_train item 8"]
    assert all(why == "required field 'text' is empty"
               for _, why in members["report_skipping"].skipped)
    assert members["report_clean"].skipped == []

    out = io.StringIO()
    print_report(report, Console(file=out, width=200))
    text = out.getvalue()
    assert "skipped" in text
    assert ("3 bad record(s) left out of split 'train' under on_bad_record='skip'. First: "
            "report_skipping: echo_train item 0: required field 'text' is empty") in text
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in text.splitlines()
            if line.startswith("│")]
    by_task = {row[0]: row for row in rows}
    assert by_task["report_skipping"][-1] == "3" and by_task["report_clean"][-1] == "0"
    assert by_task["total"][-1] == "3", text
