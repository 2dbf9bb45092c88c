"""Coreference: WSC (SuperGLUE ``wsc.fixed``) and Winogrande (its XL training set).

Both are in TFDS. WSC asks whether a pronoun refers to a noun phrase (yes/no); Winogrande
asks which of two options fills the blank ("_"). Winogrande's test labels are hidden, so its
``validation`` split is the evaluation split. Scored by accuracy over the options.
"""

from __future__ import annotations

from typing import Any

from flantune.data import Template
from flantune.metrics import accuracy, option_answer

from .common import COREFERENCE, TfdsDataset, classification, label_text, register

WSC_TEMPLATES = (
    Template("{text}\n\nIn the sentence above, does \"{pronoun}\" refer to \"{noun}\"?\n"
             "{options_}", "{answer}", name="wsc_refer"),
    Template("Sentence: {text}\nPronoun: {pronoun}\nCandidate: {noun}\n\nIs the candidate "
             "what the pronoun stands for? {options_}", "{answer}", name="wsc_stands_for"),
    Template("{text}\n\nWho or what is \"{pronoun}\"? Is it {noun}? {options_}", "{answer}",
             name="wsc_who"),
    Template("Read this: {text}\n\nHere, does the word \"{pronoun}\" mean {noun}?\n"
             "{options_}", "{answer}", name="wsc_mean"),
    Template("In \"{text}\", is \"{noun}\" the antecedent of \"{pronoun}\"? {options_}",
             "{answer}", name="wsc_antecedent"),
)
WSC = TfdsDataset("super_glue/wsc.fixed:1.0.2", label_names=("False", "True"))
register("wsc", WSC, templates=WSC_TEMPLATES, cluster=COREFERENCE,
         record_fn=classification(WSC, ("no", "yes"), {"noun": "span1_text",
                                                        "pronoun": "span2_text"}),
         has_options=True, postprocess_fn=option_answer, metric_fns=(accuracy,))

WINOGRANDE_TEMPLATES = (
    Template("{sentence}\n\nWhat does the _ stand for? {options_}", "{answer}",
             name="wg_stand_for"),
    Template("Fill in the blank (_) in the sentence.\n\n{sentence}\n\n{options_}", "{answer}",
             name="wg_fill"),
    Template("Which option best replaces the _ in \"{sentence}\"?\n{options_}", "{answer}",
             name="wg_replaces", requires_options=True),
    Template("{sentence}\nWho or what goes in the blank? {options_}", "{answer}",
             name="wg_goes"),
    Template("Complete the sentence by choosing the right option for _.\n{sentence}\n"
             "{options_}", "{answer}", name="wg_complete", requires_options=True),
)
WINOGRANDE = TfdsDataset("winogrande:1.2.0", {"train": "train_xl", "validation": "validation"},
                         label_names=("1", "2"))


def winogrande_record(record: dict[str, Any]) -> dict[str, Any]:
    """Options are the two fillers of the blank."""
    record["options"] = [record["option1"], record["option2"]]
    record["answer"] = label_text(record, WINOGRANDE, record["options"])
    return record


register("winogrande", WINOGRANDE, templates=WINOGRANDE_TEMPLATES, cluster=COREFERENCE,
         record_fn=winogrande_record, has_options=True, postprocess_fn=option_answer,
         metric_fns=(accuracy,))
