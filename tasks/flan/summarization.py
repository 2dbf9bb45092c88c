"""Summarization: CNN/DailyMail, XSum, Gigaword, Multi-News, AESLC (e-mail subject lines).

All are in TFDS. XSum needs a manual step before ``tfds build xsum`` (TFDS cannot download
the BBC articles itself; see the XSum entry of the TFDS catalog). Scored by ROUGE-1/2/Lsum.
"""

from __future__ import annotations

from typing import Any

from flantune.data import Template
from flantune.metrics import reference_answers, rouge

from .common import SUMMARIZATION, TfdsDataset, register

TEMPLATES = (
    Template("{document}\n\nSummarize the text above.", "{summary}", name="sum_above"),
    Template("Write a short summary of this article:\n\n{document}", "{summary}",
             name="sum_short"),
    Template("Article: {document}\n\nSummary:", "{summary}", name="sum_labelled"),
    Template("{document}\n\nWhat are the main points of this text?", "{summary}",
             name="sum_main_points"),
    Template("Condense the following news story into a few words.\n{document}", "{summary}",
             name="sum_condense"),
    Template("Here is a news text: {document}\n\nTell me briefly what it says.", "{summary}",
             name="sum_briefly"),
    Template("{document}\nTL;DR:", "{summary}", name="sum_tldr"),
)


def cnn_record(record: dict[str, Any]) -> dict[str, Any]:
    """The article is the document, its highlights the summary."""
    record["document"], record["summary"] = record["article"], record["highlights"]
    return record


def summarization(name: str, dataset: TfdsDataset, record_fn=None):
    return register(name, dataset, templates=TEMPLATES, cluster=SUMMARIZATION,
                    record_fn=record_fn, postprocess_fn=reference_answers,
                    metric_fns=(rouge,))


summarization("cnn_dailymail", TfdsDataset("cnn_dailymail:3.4.0"), cnn_record)
summarization("xsum", TfdsDataset("xsum:1.1.0"))
summarization("gigaword", TfdsDataset("gigaword:1.2.0"))
summarization("multi_news", TfdsDataset("multi_news:2.1.0"))

AESLC_TEMPLATES = (
    Template("{email_body}\n\nWrite a subject line for this e-mail.", "{subject_line}",
             name="aeslc_subject"),
    Template("E-mail: {email_body}\n\nSubject:", "{subject_line}", name="aeslc_labelled"),
    Template("What would be a good title for this message?\n\n{email_body}",
             "{subject_line}", name="aeslc_title"),
    Template("Summarize the e-mail below in a few words, as its subject.\n{email_body}",
             "{subject_line}", name="aeslc_few_words"),
    Template("Here is the body of an e-mail: {email_body}\nGive it a short subject.",
             "{subject_line}", name="aeslc_short"),
)
register("aeslc", TfdsDataset("aeslc:1.0.0"), templates=AESLC_TEMPLATES, cluster=SUMMARIZATION,
         postprocess_fn=reference_answers, metric_fns=(rouge,))
