"""What every FLAN library task shares: its TFDS dataset, label options, registration.

A library task reads one TFDS dataset (name with config and version, as ``tfds build`` takes
it), maps flantune's ``train``/``validation`` splits onto the dataset's own split names, turns
each record into template fields (``record_fn``) and is registered with ``@flantune.task``
under its FLAN cluster. Nothing is read at import: a dataset is opened when a split is first
used, and a dataset that is not prepared fails then with the command that prepares it.
TFDS looks in ``$TFDS_DATA_DIR`` (default ``~/tensorflow_datasets``; a ``gs://`` path works).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import flantune
from flantune.data import FewShotConfig, RecordSource, Template, TfdsSource
from flantune.data.errors import DataError, RecordError

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation")
# Flan 2022 capped few-shot inputs at 1,920 tokens; a small pool keeps exemplar reads cheap.
FEW_SHOT = FewShotConfig(max_exemplars=3, max_input_tokens=1920, pool_size=500)

# FLAN 2021's clusters (the names flantune uses as task ``cluster`` labels).
NLI = "nli"
SENTIMENT = "sentiment"
PARAPHRASE = "paraphrase"
READING_COMPREHENSION = "reading_comprehension"
COMMONSENSE = "commonsense"
CLOSED_BOOK_QA = "closed_book_qa"
COREFERENCE = "coreference"
SUMMARIZATION = "summarization"
TRANSLATION = "translation"
STRUCT_TO_TEXT = "struct_to_text"
CLUSTERS = (NLI, SENTIMENT, PARAPHRASE, READING_COMPREHENSION, COMMONSENSE, CLOSED_BOOK_QA,
            COREFERENCE, SUMMARIZATION, TRANSLATION, STRUCT_TO_TEXT)


@dataclasses.dataclass(frozen=True)
class TfdsDataset:
    """A TFDS dataset as a library task reads it.

    Attributes:
      name: ``name[/config]:version`` exactly as TFDS registers it.
      splits: flantune split -> the dataset's split (e.g. ``validation`` -> ``dev``).
      label_names: the ClassLabel names of ``label_field`` in TFDS order, for classification
        datasets (checked against the TFDS builder by the tests).
      label_field: the ClassLabel feature holding the gold label.
      labeled_only: skip records whose label is -1 (no gold label), counting them.
    """

    name: str
    splits: Mapping[str, str] = dataclasses.field(
        default_factory=lambda: {"train": "train", "validation": "validation"})
    label_names: tuple[str, ...] = ()
    label_field: str = "label"
    labeled_only: bool = False

    def tfds_split(self, split: str) -> str:
        if split not in self.splits:
            raise DataError(f"TFDS dataset '{self.name}' has no flantune split '{split}'; "
                            f"it maps {dict(self.splits)}.")
        return self.splits[split]


class LabeledOnly(RecordSource):
    """The records of ``source`` that carry a gold label (``field`` >= 0).

    SNLI, for one, has records whose annotators did not agree (label -1); FLAN left them out.
    The index is built on first use by reading every record once; the number skipped is
    logged and kept in ``skipped``.
    """

    def __init__(self, source: RecordSource, field: str, name: str):
        self.source, self.field, self.name = source, field, name
        self.skipped: list[tuple[str, str]] = []
        self._indices: list[int] | None = None
        self._lock = threading.Lock()

    def _ensure(self) -> list[int]:
        with self._lock:
            if self._indices is None:
                kept = []
                for index in range(len(self.source)):
                    if int(self.source[index][self.field]) >= 0:
                        kept.append(index)
                    else:
                        self.skipped.append((self.source.where(index), "no gold label"))
                if self.skipped:
                    logger.warning("%s: skipped %d of %d records without a gold label (%s = -1).",
                                   self.name, len(self.skipped), len(self.source), self.field)
                if not kept:
                    raise DataError(f"{self.name}: none of its {len(self.source)} records has a "
                                    f"gold label ('{self.field}' >= 0).")
                self._indices = kept
            return self._indices

    def __len__(self) -> int:
        return len(self._ensure())

    def _get(self, index: int) -> dict[str, Any]:
        return self.source[self._ensure()[index]]

    def _where(self, index: int) -> str:
        return self.source.where(self._ensure()[index])


def tfds_records(dataset: TfdsDataset, task: str) -> Callable[[str], RecordSource]:
    """The task function reading ``dataset``; it carries ``tfds_name`` and ``tfds_splits`` so
    ``flantune inspect --library`` can tell whether the data is prepared."""

    def records(split: str) -> RecordSource:
        try:
            source = TfdsSource(dataset.name, dataset.tfds_split(split))
        except DataError as err:
            raise type(err)(f"task '{task}': {err}") from None
        if dataset.labeled_only:
            return LabeledOnly(source, dataset.label_field, f"task '{task}' ({dataset.name})")
        return source

    records.__qualname__ = f"flan.{task}"
    records.__doc__ = f"TFDS {dataset.name}."
    records.tfds_name = dataset.name  # type: ignore[attr-defined]
    records.tfds_splits = dict(dataset.splits)  # type: ignore[attr-defined]
    return records


def label_text(record: Mapping[str, Any], dataset: TfdsDataset,
               options: Sequence[str]) -> str:
    """The option naming the record's ClassLabel (``options`` follow ``label_names``' order)."""
    label = record[dataset.label_field]
    if not isinstance(label, int) or not 0 <= label < len(options):
        raise RecordError(
            f"field '{dataset.label_field}' is {label!r}, not a label index in "
            f"0..{len(options) - 1} ({dict(enumerate(dataset.label_names))}); an unlabeled "
            "(test) split cannot be "
            "used for training or scoring")
    return options[label]


RecordFn = Callable[[dict[str, Any]], dict[str, Any]]


def classification(dataset: TfdsDataset, options: Sequence[str],
                   rename: Mapping[str, str] | None = None) -> RecordFn:
    """A record_fn for a classification dataset: ``options`` (one per label, in
    ``label_names`` order) and ``answer``, plus template fields renamed per ``rename``
    (template field -> dataset feature)."""
    if len(options) != len(dataset.label_names):
        raise DataError(f"{dataset.name}: {len(options)} options for "
                        f"{len(dataset.label_names)} labels {dataset.label_names}.")
    rename = dict(rename or {})

    def record_fn(record: dict[str, Any]) -> dict[str, Any]:
        for field, feature in rename.items():
            record[field] = record[feature]
        record["options"] = list(options)
        record["answer"] = label_text(record, dataset, options)
        return record

    return record_fn


def library_task(name: str, dataset: TfdsDataset, *, templates: Sequence[Template],
                 cluster: str, metric_fns: Iterable[Callable], record_fn: RecordFn | None = None,
                 has_options: bool = False, postprocess_fn: Callable | None = None):
    """Registers the library task ``name`` (and its variants) reading ``dataset``."""
    if cluster not in CLUSTERS:
        raise DataError(f"Task '{name}': unknown cluster '{cluster}'; use one of {CLUSTERS}.")
    return flantune.task(
        name, templates=templates, splits=SPLITS, record_fn=record_fn,
        has_options=has_options, few_shot=FEW_SHOT, postprocess_fn=postprocess_fn,
        metric_fns=list(metric_fns), cluster=cluster)(tfds_records(dataset, name))


def reference_list(texts: Iterable[Any], where: str) -> list[str]:
    """The distinct non-empty answers of ``texts`` (in order); RecordError if none."""
    seen: list[str] = []
    for text in texts:
        text = str(text).strip()
        if text and text not in seen:
            seen.append(text)
    if not seen:
        raise RecordError(f"the record has no non-empty reference answer in {where}")
    return seen



# Every library dataset by task name (filled by the cluster modules as they register).
DATASETS: dict[str, TfdsDataset] = {}


def register(name: str, dataset: TfdsDataset, **kwargs):
    """:func:`library_task`, remembering the dataset in :data:`DATASETS`."""
    DATASETS[name] = dataset
    return library_task(name, dataset, **kwargs)
