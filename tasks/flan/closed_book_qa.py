"""Closed-book question answering: ARC (Easy, Challenge), TriviaQA, Natural Questions.

All are in TFDS. TriviaQA is read without its evidence documents (``rc.nocontext``); Natural
Questions is its open-domain version (``natural_questions_open``: question and short answers),
as FLAN used it. ARC is multiple choice scored by accuracy; TriviaQA and Natural Questions by
exact match / F1 after TriviaQA's answer normalization (as T5 and FLAN score both) against every
accepted answer (TriviaQA: its aliases).
"""

from __future__ import annotations

from typing import Any

from flantune.data import Template
from flantune.data.errors import RecordError
from flantune.metrics import accuracy, option_answer, reference_answers, trivia_qa

from .common import CLOSED_BOOK_QA, TfdsDataset, reference_list, register

ARC_TEMPLATES = (
    Template("{question}\n\n{options_}", "{answer}", name="arc_plain", requires_options=True),
    Template("Question: {question}\n{options_}\nAnswer:", "{answer}", name="arc_labelled"),
    Template("Answer this science question.\n\n{question}\n{options_}", "{answer}",
             name="arc_science"),
    Template("{question}\nWhich of these is correct? {options_}", "{answer}",
             name="arc_correct", requires_options=True),
    Template("Here is a question from a grade-school science test: {question}\n\n{options_}",
             "{answer}", name="arc_test"),
    Template("Pick the right answer to the question.\n{question}\n\n{options_}", "{answer}",
             name="arc_pick", requires_options=True),
)
ARC_LETTERS = ("A", "B", "C", "D", "E")


def arc_dataset(config: str) -> TfdsDataset:
    return TfdsDataset(f"ai2_arc/{config}:1.0.0", label_names=ARC_LETTERS,
                       label_field="answerKey")


def arc_record(record: dict[str, Any]) -> dict[str, Any]:
    """Options are the choices' texts; ``answerKey`` names the right choice's letter."""
    choices = record["choices"]
    record["options"] = [str(t) for t in choices["text"]]
    try:
        position = list(choices["label"]).index(record["answerKey"])
    except ValueError:
        raise RecordError(f"answerKey {record['answerKey']!r} is not among the choice labels "
                          f"{list(choices['label'])}") from None
    if position >= len(record["options"]):
        raise RecordError(f"choices have {len(record['options'])} texts for "
                          f"{len(choices['label'])} labels")
    record["answer"] = record["options"][position]
    return record


for config, name in (("ARC-Easy", "arc_easy"), ("ARC-Challenge", "arc_challenge")):
    register(name, arc_dataset(config), templates=ARC_TEMPLATES, cluster=CLOSED_BOOK_QA,
             record_fn=arc_record, has_options=True, postprocess_fn=option_answer,
             metric_fns=(accuracy,))

OPEN_QA_TEMPLATES = (
    Template("{question}", "{answer}", name="cbqa_plain"),
    Template("Answer the following question.\n{question}", "{answer}", name="cbqa_answer"),
    Template("Q: {question}\nA:", "{answer}", name="cbqa_qa"),
    Template("Here is a trivia question: {question}\nWhat is the answer?", "{answer}",
             name="cbqa_trivia"),
    Template("{question}\n\nReply with a short answer.", "{answer}", name="cbqa_short"),
    Template("Question: {question}\n\nWhat do you know the answer to be?", "{answer}",
             name="cbqa_know"),
)


def trivia_qa_record(record: dict[str, Any]) -> dict[str, Any]:
    """``answer`` is the answer's value; its aliases are accepted references too."""
    answer = record["answer"]
    record["references"] = reference_list([answer["value"], *answer["aliases"]],
                                       "answer.value / answer.aliases")
    record["answer"] = record["references"][0]
    return record


def nq_open_record(record: dict[str, Any]) -> dict[str, Any]:
    """``answer`` is the first short answer; all short answers are references."""
    record["references"] = reference_list(list(record["answer"]), "answer")
    record["answer"] = record["references"][0]
    return record


register("trivia_qa", TfdsDataset("trivia_qa/rc.nocontext:1.1.0"), templates=OPEN_QA_TEMPLATES,
         cluster=CLOSED_BOOK_QA, record_fn=trivia_qa_record, postprocess_fn=reference_answers,
         metric_fns=(trivia_qa,))
register("natural_questions", TfdsDataset("natural_questions_open:1.0.0"),
         templates=OPEN_QA_TEMPLATES, cluster=CLOSED_BOOK_QA, record_fn=nq_open_record,
         postprocess_fn=reference_answers, metric_fns=(trivia_qa,))
