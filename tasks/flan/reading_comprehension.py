"""Reading comprehension: BoolQ, SQuAD v1.1 and v2.0, MultiRC, DROP, OpenBookQA.

All are in TFDS (BoolQ and MultiRC from SuperGLUE, whose test splits are unlabeled; DROP's
evaluation split is called ``dev``). SQuAD and DROP are scored by SQuAD exact match / F1
against every reference answer (SQuAD v2.0's unanswerable questions: "unanswerable");
BoolQ and OpenBookQA by accuracy; MultiRC, as in FLAN, as a yes/no question
per (paragraph, question, candidate answer), by accuracy and macro F1.
"""

from __future__ import annotations

from typing import Any

from flantune.data import Template
from flantune.metrics import accuracy, macro_f1, option_answer, reference_answers, squad

from .common import (
    READING_COMPREHENSION,
    TfdsDataset,
    classification,
    label_text,
    reference_list,
    register,
)

BOOLQ_TEMPLATES = (
    Template("{passage}\n\nAfter reading the text, answer: {question}?\n{options_}",
             "{answer}", name="boolq_after_reading"),
    Template("Passage: {passage}\nQuestion: {question}?\n{options_}", "{answer}",
             name="boolq_labelled"),
    Template("Is it true that {question}? Use this text to decide.\n\n{passage}\n\n"
             "{options_}", "{answer}", name="boolq_true"),
    Template("{passage}\n\nBased on this, {question}? {options_}", "{answer}",
             name="boolq_based_on"),
    Template("Read the passage and answer the yes/no question.\n\n{passage}\n\n"
             "Q: {question}?\n{options_}", "{answer}", name="boolq_yes_no"),
    Template("{question}?\n\nHere is some background:\n{passage}\n{options_}", "{answer}",
             name="boolq_background"),
)
BOOLQ = TfdsDataset("super_glue/boolq:1.0.2", label_names=("False", "True"))
register("boolq", BOOLQ, templates=BOOLQ_TEMPLATES, cluster=READING_COMPREHENSION,
         record_fn=classification(BOOLQ, ("no", "yes")), has_options=True,
         postprocess_fn=option_answer, metric_fns=(accuracy,))

EXTRACTIVE_TEMPLATES = (
    Template("{context}\n\nAnswer this question about the text above: {question}", "{answer}",
             name="extract_about"),
    Template("Read the passage and answer the question.\n\nPassage: {context}\n\nQuestion: "
             "{question}", "{answer}", name="extract_read"),
    Template("Context: {context}\nQ: {question}\nA:", "{answer}", name="extract_qa"),
    Template("Here is a text:\n{context}\n\nUsing words from it, what is the answer to "
             "\"{question}\"?", "{answer}", name="extract_words"),
    Template("{question}\n\nFind the answer in this text:\n{context}", "{answer}",
             name="extract_find"),
    Template("Answer the question based on the article.\n\nArticle: {context}\n\n"
             "{question}", "{answer}", name="extract_article"),
    Template("I read this: \"{context}\"\n\nSo, {question}", "{answer}", name="extract_i_read"),
)


def squad_record(record: dict[str, Any]) -> dict[str, Any]:
    """``answer``: the first gold span; ``references``: every distinct gold span."""
    record["references"] = reference_list(record["answers"]["text"], "answers.text")
    record["answer"] = record["references"][0]
    return record


def drop_record(record: dict[str, Any]) -> dict[str, Any]:
    """``context`` is the passage; references are the answer and the validated answers."""
    record["context"] = record["passage"]
    record["references"] = reference_list([record["answer"], *record["validated_answers"]],
                                       "answer / validated_answers")
    record["answer"] = record["references"][0]
    return record


register("squad_v1", TfdsDataset("squad/v1.1:3.0.0"), templates=EXTRACTIVE_TEMPLATES,
         cluster=READING_COMPREHENSION, record_fn=squad_record,
         postprocess_fn=reference_answers, metric_fns=(squad,))
register("drop", TfdsDataset("drop:2.0.0", {"train": "train", "validation": "dev"}),
         templates=EXTRACTIVE_TEMPLATES, cluster=READING_COMPREHENSION, record_fn=drop_record,
         postprocess_fn=reference_answers, metric_fns=(squad,))

MULTIRC_TEMPLATES = (
    Template("{paragraph}\n\nQuestion: {question}\nIs \"{candidate}\" a correct answer?\n"
             "{options_}", "{answer}", name="multirc_correct"),
    Template("Read the text and decide whether the answer given is right.\n\nText: "
             "{paragraph}\n\nQuestion: {question}\nAnswer: {candidate}\n\n{options_}",
             "{answer}", name="multirc_right"),
    Template("{paragraph}\n\nAccording to the text, would \"{candidate}\" answer the question "
             "\"{question}\"? {options_}", "{answer}", name="multirc_according"),
    Template("Paragraph: {paragraph}\n\n{question}\nProposed answer: {candidate}\nIs the "
             "proposed answer true? {options_}", "{answer}", name="multirc_proposed"),
    Template("Based on the paragraph below, can the question \"{question}\" be answered with "
             "\"{candidate}\"?\n\n{paragraph}\n{options_}", "{answer}", name="multirc_based"),
)
MULTIRC = TfdsDataset("super_glue/multirc:1.0.2", label_names=("False", "True"))
register("multirc", MULTIRC, templates=MULTIRC_TEMPLATES, cluster=READING_COMPREHENSION,
         record_fn=classification(MULTIRC, ("no", "yes"), {"candidate": "answer"}),
         has_options=True, postprocess_fn=option_answer, metric_fns=(accuracy, macro_f1))

SQUAD_V2_TEMPLATES = (
    Template("{context}\n\nAnswer this question about the text, or say \"unanswerable\" if "
             "the text does not tell: {question}", "{answer}", name="squad2_about"),
    Template("Passage: {context}\n\nQuestion: {question}\n\nIf the passage has no answer, "
             "reply \"unanswerable\".", "{answer}", name="squad2_passage"),
    Template("Read the text and answer the question (it may be unanswerable).\n\n{context}\n\n"
             "Q: {question}", "{answer}", name="squad2_read"),
    Template("{question}\n\nUse only this text to answer; if it cannot be answered from it, "
             "write unanswerable.\n{context}", "{answer}", name="squad2_only"),
    Template("Context: {context}\nQuestion: {question}\nAnswer (or \"unanswerable\"):",
             "{answer}", name="squad2_labelled"),
)
UNANSWERABLE = "unanswerable"


def squad_v2_record(record: dict[str, Any]) -> dict[str, Any]:
    """Questions the passage does not answer have the answer "unanswerable"."""
    if record["is_impossible"]:
        record["references"] = [UNANSWERABLE]
        record["answer"] = UNANSWERABLE
        return record
    return squad_record(record)


register("squad_v2", TfdsDataset("squad/v2.0:3.0.0"), templates=SQUAD_V2_TEMPLATES,
         cluster=READING_COMPREHENSION, record_fn=squad_v2_record,
         postprocess_fn=reference_answers, metric_fns=(squad,))

OPENBOOKQA_TEMPLATES = (
    Template("Fact: {fact}\n\nUse the fact to answer: {stem}\n{options_}", "{answer}",
             name="obqa_fact"),
    Template("{fact}\n\nGiven the statement above, {stem}\n\n{options_}", "{answer}",
             name="obqa_given"),
    Template("Question: {stem}\nHint: {fact}\n{options_}\nAnswer:", "{answer}",
             name="obqa_hint"),
    Template("Knowing that \"{fact}\", answer the question.\n\n{stem}\n{options_}",
             "{answer}", name="obqa_knowing"),
    Template("{stem}\n\nWhich answer is right? Keep in mind that {fact}\n{options_}",
             "{answer}", name="obqa_keep_in_mind", requires_options=True),
)
OPENBOOKQA = TfdsDataset("openbookqa:0.1.0", label_names=("A", "B", "C", "D"),
                         label_field="answerKey")


def openbookqa_record(record: dict[str, Any]) -> dict[str, Any]:
    """Options are choices A-D; ``fact`` is the open-book fact the question tests."""
    question = record["question"]
    record["stem"] = question["stem"]
    record["fact"] = record["fact1"]
    record["options"] = [question[f"choice_{letter}"] for letter in OPENBOOKQA.label_names]
    record["answer"] = label_text(record, OPENBOOKQA, record["options"])
    return record


register("openbookqa", OPENBOOKQA, templates=OPENBOOKQA_TEMPLATES,
         cluster=READING_COMPREHENSION, record_fn=openbookqa_record, has_options=True,
         postprocess_fn=option_answer, metric_fns=(accuracy,))
