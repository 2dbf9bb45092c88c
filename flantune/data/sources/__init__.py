"""Record sources: deterministic, random-access raw records of one split.

A :class:`RecordSource` is a sequence of plain ``dict`` records with a human location for each
(``where(i)``, e.g. ``"data/a.jsonl:17"``) so later errors can point at the input. Sources:

- :class:`JsonlSource` and :class:`CsvSource`: files, optionally normalized by a format from
  :mod:`flantune.data.formats` (a format may expand one line into several records);
- :class:`TfdsSource`: a TensorFlow Datasets dataset by name;
- :class:`ReasoningGymSource`: a reasoning-gym procedural generator;
- :class:`IterableSource`: any deterministic generator of dict records.

File sources validate every record when they build their index (on first use), so bad input
surfaces before training starts. By default a bad record raises :class:`RecordError` naming the
file and 1-based line; with ``on_bad_record="skip"`` it is left out, listed in ``skipped`` and
reported once through ``logging``.
"""

from flantune.data.sources.base import Format, OnBadRecord, RecordSource
from flantune.data.sources.files import CsvSource, JsonlSource
from flantune.data.sources.iterable import IterableSource
from flantune.data.sources.reasoning_gym import (
    HASH_SEED_DEPENDENT,
    NEVER_REPRODUCIBLE,
    ReasoningGymSource,
)
from flantune.data.sources.splits import ModuloSplit
from flantune.data.sources.tfds import TfdsSource, to_python

__all__ = ["HASH_SEED_DEPENDENT", "NEVER_REPRODUCIBLE", "CsvSource", "Format", "IterableSource",
           "JsonlSource", "ModuloSplit", "OnBadRecord", "ReasoningGymSource", "RecordSource",
           "TfdsSource", "to_python"]
