"""Commonsense reasoning: COPA (SuperGLUE), HellaSwag, PIQA.

All are in TFDS; HellaSwag's and PIQA's ``validation`` splits are the labeled evaluation
splits (their test labels are hidden). Multiple choice, scored by accuracy over the options.
"""

from __future__ import annotations

from typing import Any

from flantune.data import Template
from flantune.metrics import accuracy, option_answer

from .common import COMMONSENSE, TfdsDataset, label_text, register

COPA_TEMPLATES = (
    Template("{premise} What was the {question}?\n{options_}", "{answer}",
             name="copa_what_was"),
    Template("Premise: {premise}\nWhich is the more likely {question}?\n\n{options_}",
             "{answer}", name="copa_more_likely"),
    Template("Here is a situation: \"{premise}\"\n\nPick the more plausible {question} of it."
             "\n{options_}", "{answer}", name="copa_plausible", requires_options=True),
    Template("{premise}\n\nI am looking for the {question}. {options_}", "{answer}",
             name="copa_looking_for"),
    Template("Choose the {question} that fits best.\n\n{premise}\n\n{options_}", "{answer}",
             name="copa_fits", requires_options=True),
    Template("What is the {question} of this?\n{premise}\n{options_}", "{answer}",
             name="copa_of_this"),
)
COPA = TfdsDataset("super_glue/copa:1.0.2", label_names=("choice1", "choice2"))


def copa_record(record: dict[str, Any]) -> dict[str, Any]:
    """Options are the two alternatives; ``question`` is "cause" or "effect"."""
    record["options"] = [record["choice1"], record["choice2"]]
    record["answer"] = label_text(record, COPA, record["options"])
    return record


register("copa", COPA, templates=COPA_TEMPLATES, cluster=COMMONSENSE, record_fn=copa_record,
         has_options=True, postprocess_fn=option_answer, metric_fns=(accuracy,))

HELLASWAG_TEMPLATES = (
    Template("What happens next?\n\n{context}\n\n{options_}", "{answer}", name="hs_next"),
    Template("{context}\n\nHow does the description continue? {options_}", "{answer}",
             name="hs_continue"),
    Template("Complete the text.\n{context}\n{options_}", "{answer}", name="hs_complete"),
    Template("Topic: {activity_label}\n\n{context}\n\nWhich ending makes the most sense?\n"
             "{options_}", "{answer}", name="hs_topic", requires_options=True),
    Template("{context}...\n\nWrite the most likely continuation. {options_}", "{answer}",
             name="hs_likely"),
    Template("Here is the start of a description of {activity_label}: {context}\n\nHow "
             "should it end?\n{options_}", "{answer}", name="hs_start"),
)
HELLASWAG = TfdsDataset("hellaswag:1.1.0")


def hellaswag_record(record: dict[str, Any]) -> dict[str, Any]:
    """Options are the candidate endings; ``label`` indexes the right one."""
    record["options"] = [str(e) for e in record["endings"]]
    record["answer"] = label_text(record, HELLASWAG, record["options"])
    return record


register("hellaswag", HELLASWAG, templates=HELLASWAG_TEMPLATES, cluster=COMMONSENSE,
         record_fn=hellaswag_record, has_options=True, postprocess_fn=option_answer,
         metric_fns=(accuracy,))

PIQA_TEMPLATES = (
    Template("Goal: {goal}\n\nWhich way of reaching the goal makes more sense?\n{options_}",
             "{answer}", name="piqa_goal", requires_options=True),
    Template("How would you do this: {goal}\n{options_}", "{answer}", name="piqa_how"),
    Template("{goal}\n\nDescribe a way to do it. {options_}", "{answer}", name="piqa_describe"),
    Template("Here is a task: {goal}\n\nWhat is the best way to get it done?\n{options_}",
             "{answer}", name="piqa_best_way"),
    Template("Pick the solution that works physically.\n\n{goal}\n\n{options_}", "{answer}",
             name="piqa_physical", requires_options=True),
)
PIQA = TfdsDataset("piqa:1.0.0", label_names=("0", "1"))


def piqa_record(record: dict[str, Any]) -> dict[str, Any]:
    """Options are the two solutions."""
    record["options"] = [record["sol1"], record["sol2"]]
    record["answer"] = label_text(record, PIQA, record["options"])
    return record


register("piqa", PIQA, templates=PIQA_TEMPLATES, cluster=COMMONSENSE, record_fn=piqa_record,
         has_options=True, postprocess_fn=option_answer, metric_fns=(accuracy,))
