"""Natural language inference: ANLI (rounds 1-3), RTE, CB, SNLI, MNLI, QNLI, WNLI.

Every dataset is in TFDS. RTE and CB come from SuperGLUE (as in FLAN), MNLI, QNLI and WNLI
from GLUE; GLUE/SuperGLUE test splits are unlabeled, so ``validation`` is the evaluation split
(MNLI: ``validation_matched``). SNLI records without a gold label are skipped (counted).
Scored by accuracy over the answer options (CB also by macro F1, as SuperGLUE reports it).
"""

from __future__ import annotations

from flantune.data import Template
from flantune.metrics import accuracy, macro_f1, option_answer

from .common import NLI, TfdsDataset, classification, register

THREE_WAY = ("yes", "it is not possible to tell", "no")
TWO_WAY = ("yes", "no")

PREMISE_HYPOTHESIS = (
    Template("{premise}\n\nBased on the text above, is it true that \"{hypothesis}\"?\n\n"
             "{options_}", "{answer}", name="nli_true_that"),
    Template("Premise: {premise}\nHypothesis: {hypothesis}\n\nDoes the premise entail the "
             "hypothesis?\n{options_}", "{answer}", name="nli_entail"),
    Template("Read this passage:\n{premise}\n\nCan we conclude the following?\n{hypothesis}\n"
             "{options_}", "{answer}", name="nli_conclude"),
    Template("{premise}\nQuestion: if that is so, does it follow that \"{hypothesis}\"?\n"
             "{options_}", "{answer}", name="nli_follow"),
    Template("Here is a statement: {premise}\n\nAnd here is a claim: {hypothesis}\n\nIs the "
             "claim supported by the statement? {options_}", "{answer}", name="nli_supported"),
    Template("Suppose that {premise}\n\nMust it then be the case that {hypothesis}?\n"
             "{options_}", "{answer}", name="nli_suppose"),
    Template("{premise}\n\nGiven the sentences above, decide whether this is accurate: "
             "{hypothesis}\n{options_}", "{answer}", name="nli_accurate"),
    Template("Text: {premise}\n\nStatement: {hypothesis}\n\nIs the statement true according "
             "to the text?\n\n{options_}", "{answer}", name="nli_statement"),
)


def nli(name: str, dataset: TfdsDataset, options, *, rename=None, metrics=(accuracy,)):
    return register(name, dataset, templates=PREMISE_HYPOTHESIS, cluster=NLI,
                    record_fn=classification(dataset, options, rename), has_options=True,
                    postprocess_fn=option_answer, metric_fns=metrics)


ENTAILMENT_3 = ("entailment", "neutral", "contradiction")
for round_ in ("r1", "r2", "r3"):
    nli(f"anli_{round_}", TfdsDataset(f"anli/{round_}:0.1.0", label_names=("e", "n", "c")),
        THREE_WAY, rename={"premise": "context"})
nli("rte", TfdsDataset("super_glue/rte:1.0.2", label_names=("entailment", "not_entailment")),
    TWO_WAY)
nli("cb", TfdsDataset("super_glue/cb:1.0.2", label_names=("entailment", "contradiction",
                                                           "neutral")),
    ("yes", "no", "it is not possible to tell"), metrics=(accuracy, macro_f1))
nli("snli", TfdsDataset("snli:1.1.0", label_names=ENTAILMENT_3, labeled_only=True), THREE_WAY)
nli("mnli", TfdsDataset("glue/mnli:2.0.0", {"train": "train",
                                            "validation": "validation_matched"},
                        label_names=ENTAILMENT_3), THREE_WAY)
nli("wnli", TfdsDataset("glue/wnli:2.0.0", label_names=("not_entailment", "entailment")),
    ("no", "yes"), rename={"premise": "sentence1", "hypothesis": "sentence2"})

QNLI_TEMPLATES = (
    Template("Does the sentence \"{sentence}\" answer the question \"{question}\"?\n"
             "{options_}", "{answer}", name="qnli_answers"),
    Template("Question: {question}\nSentence: {sentence}\n\nDoes the sentence contain the "
             "answer to the question?\n{options_}", "{answer}", name="qnli_contains"),
    Template("{question}\n\nIs \"{sentence}\" a good answer to the question above?\n"
             "{options_}", "{answer}", name="qnli_good_answer"),
    Template("Someone asked: {question}\nThe reply was: {sentence}\n\nDid the reply answer "
             "what was asked? {options_}", "{answer}", name="qnli_reply"),
    Template("Can this question be answered from the sentence that follows?\n\n{question}\n\n"
             "{sentence}\n\n{options_}", "{answer}", name="qnli_answerable"),
)
QNLI = TfdsDataset("glue/qnli:2.0.0", label_names=("entailment", "not_entailment"))
register("qnli", QNLI, templates=QNLI_TEMPLATES, cluster=NLI,
         record_fn=classification(QNLI, TWO_WAY), has_options=True,
         postprocess_fn=option_answer, metric_fns=(accuracy,))
