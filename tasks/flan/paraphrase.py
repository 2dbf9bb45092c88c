"""Paraphrase detection: MRPC and QQP (GLUE), PAWS (paws_wiki, labeled_final, raw text).

All are in TFDS; GLUE test splits are unlabeled, so ``validation`` is the evaluation split.
Scored by accuracy and, as GLUE reports them, F1 of the "yes" (paraphrase) class for MRPC and
QQP (an answer that is neither option counts as wrong, as in T5); PAWS by accuracy and macro F1.
"""

from __future__ import annotations

from flantune.data import Template
from flantune.metrics import accuracy, macro_f1, option_answer, positive_f1

from .common import PARAPHRASE, TfdsDataset, classification, register

TEMPLATES = (
    Template("Do these two sentences mean the same thing?\n{first}\n{second}\n\n{options_}",
             "{answer}", name="para_same_thing"),
    Template("Sentence 1: {first}\nSentence 2: {second}\n\nIs the second a paraphrase of the "
             "first? {options_}", "{answer}", name="para_paraphrase"),
    Template("\"{first}\"\n\"{second}\"\n\nAre the two texts above saying the same? "
             "{options_}", "{answer}", name="para_saying"),
    Template("{first}\n\nIs that equivalent to \"{second}\"?\n{options_}", "{answer}",
             name="para_equivalent"),
    Template("Compare the two sentences and say if they have the same meaning.\n\nA: {first}"
             "\nB: {second}\n\n{options_}", "{answer}", name="para_compare"),
    Template("Could \"{second}\" be used in place of \"{first}\" without changing the "
             "meaning? {options_}", "{answer}", name="para_in_place"),
)
QUESTION_TEMPLATES = (
    Template("Are these two questions asking the same thing?\n{first}\n{second}\n{options_}",
             "{answer}", name="qqp_same"),
    Template("Question 1: {first}\nQuestion 2: {second}\n\nWould the same answer fit both "
             "questions? {options_}", "{answer}", name="qqp_same_answer"),
    Template("{first}\n\n{second}\n\nAre the questions above duplicates of each other?\n"
             "{options_}", "{answer}", name="qqp_duplicates"),
    Template("Is the question \"{first}\" a rewording of \"{second}\"? {options_}",
             "{answer}", name="qqp_rewording"),
    Template("Someone asked \"{first}\" and someone else asked \"{second}\". Do they want "
             "to know the same thing?\n{options_}", "{answer}", name="qqp_want_to_know"),
)
NO_YES = ("no", "yes")
SENTENCES = {"first": "sentence1", "second": "sentence2"}


def paraphrase(name: str, dataset: TfdsDataset, templates, rename, metric_fns=(accuracy,
                                                                            macro_f1)):
    return register(name, dataset, templates=templates, cluster=PARAPHRASE,
                    record_fn=classification(dataset, NO_YES, rename), has_options=True,
                    postprocess_fn=option_answer, metric_fns=metric_fns)


GLUE_METRICS = (accuracy, positive_f1("yes", negative="no"))


paraphrase("mrpc", TfdsDataset("glue/mrpc:2.0.0", label_names=("not_equivalent",
                                                               "equivalent")),
           TEMPLATES, SENTENCES, GLUE_METRICS)
paraphrase("qqp", TfdsDataset("glue/qqp:2.0.0", label_names=("not_duplicate", "duplicate")),
           QUESTION_TEMPLATES, {"first": "question1", "second": "question2"}, GLUE_METRICS)
paraphrase("paws_wiki", TfdsDataset("paws_wiki/labeled_final_raw:1.1.0",
                                    label_names=("different_meaning", "paraphrase")),
           TEMPLATES, SENTENCES)
