"""Translation: WMT'16 German-English and Romanian-English, WMT'14 French-English, each in
both directions.

All are in TFDS (``wmt16_translate``, ``wmt14_translate``), with the official newstest
validation sets. Scored by corpus BLEU (sacrebleu).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flantune.data import Template
from flantune.metrics import bleu, reference_answers

from .common import TRANSLATION, TfdsDataset, register

TEMPLATES = (
    Template("Translate from {source_language} to {target_language}:\n\n{source}", "{target}",
             name="mt_translate"),
    Template("{source}\n\nTranslate this into {target_language}.", "{target}",
             name="mt_into"),
    Template("{source_language}: {source}\n{target_language}:", "{target}", name="mt_labelled"),
    Template("How do you say \"{source}\" in {target_language}?", "{target}", name="mt_say"),
    Template("Here is a sentence in {source_language}: {source}\n\nWrite it in "
             "{target_language}.", "{target}", name="mt_write"),
    Template("What is the {target_language} for this {source_language} text?\n{source}",
             "{target}", name="mt_what"),
)
LANGUAGES = {"de": "German", "en": "English", "fr": "French", "ro": "Romanian"}


def direction(source: str, target: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A record_fn reading the ``source`` and ``target`` language features."""

    def record_fn(record: dict[str, Any]) -> dict[str, Any]:
        record["source"], record["target"] = record[source], record[target]
        record["source_language"] = LANGUAGES[source]
        record["target_language"] = LANGUAGES[target]
        return record

    return record_fn


for tfds_name, pair in (("wmt16_translate/de-en:1.0.0", ("de", "en")),
                        ("wmt16_translate/ro-en:1.0.0", ("ro", "en")),
                        ("wmt14_translate/fr-en:1.0.0", ("fr", "en"))):
    corpus = tfds_name.split("_")[0]  # wmt16 / wmt14
    for source, target in (pair, pair[::-1]):
        register(f"{corpus}_{source}_{target}", TfdsDataset(tfds_name),
                 templates=TEMPLATES, cluster=TRANSLATION, record_fn=direction(source, target),
                 postprocess_fn=reference_answers, metric_fns=(bleu,))
