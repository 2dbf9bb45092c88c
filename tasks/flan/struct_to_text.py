"""Struct to text: CommonGen, E2E NLG and WebNLG (English) from TFDS's GEM benchmark, DART.

All are in TFDS. Concept sets, meaning representations and triples are written out as text
fields; targets are one reference, and every reference of the record counts when scoring
(ROUGE-1/2/Lsum, best reference).
"""

from __future__ import annotations

from typing import Any

from flantune.data import Template
from flantune.metrics import reference_answers, rouge

from .common import STRUCT_TO_TEXT, TfdsDataset, register


def _with_references(record: dict[str, Any], target: str) -> dict[str, Any]:
    references = [str(r) for r in record.get("references", []) if str(r).strip()]
    record["target"] = target
    record["references"] = [target, *(r for r in references if r != target)]
    return record


COMMON_GEN_TEMPLATES = (
    Template("Write a sentence using all of these words: {concepts_text}", "{target}",
             name="cg_sentence"),
    Template("Concepts: {concepts_text}\n\nMake a sentence about everyday life with them.",
             "{target}", name="cg_everyday"),
    Template("{concepts_text}\n\nWhat is a sentence that contains these words?", "{target}",
             name="cg_contains"),
    Template("Use the words {concepts_text} in one sentence.", "{target}", name="cg_use"),
    Template("Here are some keywords: {concepts_text}. Describe a scene with them.",
             "{target}", name="cg_scene"),
)


def common_gen_record(record: dict[str, Any]) -> dict[str, Any]:
    record["concepts_text"] = ", ".join(str(c) for c in record["concepts"])
    return _with_references(record, record["target"])


E2E_TEMPLATES = (
    Template("Describe this restaurant in a sentence: {meaning_representation}", "{target}",
             name="e2e_describe"),
    Template("Attributes: {meaning_representation}\n\nWrite a review-style sentence that "
             "mentions all of them.", "{target}", name="e2e_attributes"),
    Template("{meaning_representation}\n\nTurn the data above into text.", "{target}",
             name="e2e_turn"),
    Template("Here is some data about a restaurant: {meaning_representation}. Write a "
             "sentence about it.", "{target}", name="e2e_data"),
    Template("Generate a description from these facts: {meaning_representation}",
             "{target}", name="e2e_generate"),
)


def e2e_record(record: dict[str, Any]) -> dict[str, Any]:
    return _with_references(record, record["target"])


TRIPLE_TEMPLATES = (
    Template("Write a sentence that states these facts:\n{triples}", "{target}",
             name="triples_state"),
    Template("Facts: {triples}\n\nExpress them in plain English.", "{target}",
             name="triples_plain"),
    Template("{triples}\n\nWhat sentence describes the data above?", "{target}",
             name="triples_describes"),
    Template("Turn these subject | relation | object triples into text: {triples}",
             "{target}", name="triples_turn"),
    Template("Here is some structured data:\n{triples}\nWrite it as a sentence.", "{target}",
             name="triples_sentence"),
)


def web_nlg_record(record: dict[str, Any]) -> dict[str, Any]:
    """Triples come as "subject | predicate | object" strings; one per line."""
    record["triples"] = "\n".join(str(t) for t in record["input"])
    return _with_references(record, record["target"])


def dart_record(record: dict[str, Any]) -> dict[str, Any]:
    """The table's cells (subject, predicate, object per row) as "a | b | c" lines."""
    table = record["input_text"]["table"]
    rows: dict[int, list[str]] = {}
    for number, content in zip(table["row_number"], table["content"], strict=True):
        rows.setdefault(int(number), []).append(str(content))
    record["triples"] = "\n".join(" | ".join(cells) for _, cells in sorted(rows.items()))
    record["target"] = record["target_text"]
    record["references"] = [record["target_text"]]
    return record


for name, dataset, templates, record_fn in (
        ("common_gen", TfdsDataset("gem/common_gen:1.1.0"), COMMON_GEN_TEMPLATES,
         common_gen_record),
        ("e2e_nlg", TfdsDataset("gem/e2e_nlg:1.1.0"), E2E_TEMPLATES, e2e_record),
        ("web_nlg_en", TfdsDataset("gem/web_nlg_en:1.1.0"), TRIPLE_TEMPLATES, web_nlg_record),
        ("dart", TfdsDataset("dart:0.1.0"), TRIPLE_TEMPLATES, dart_record)):
    register(name, dataset, templates=templates, cluster=STRUCT_TO_TEXT, record_fn=record_fn,
             postprocess_fn=reference_answers, metric_fns=(rouge,))
