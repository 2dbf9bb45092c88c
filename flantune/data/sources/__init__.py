"""Record sources: deterministic, random-access raw records of one split.

A :class:`RecordSource` is a sequence of plain ``dict`` records with a human location for each
(``where(i)``, e.g. ``"data/a.jsonl:17"``) so later errors can point at the input. Sources:

- :class:`JsonlSource` and :class:`CsvSource`: files, optionally normalized by a format from
  :mod:`flantune.data.formats` (a format may expand one line into several records);
- :class:`TfdsSource`: a TensorFlow Datasets dataset by name;
- :class:`ReasoningGymSource`: a reasoning-gym procedural generator;
- :class:`IterableSource`: any deterministic generator of dict records.

Every source takes ``on_bad_record``. By default a bad record raises :class:`RecordError` naming
the file and 1-based line (or the dataset item); with ``on_bad_record="skip"`` it is left out,
listed in ``skipped``, reported once through ``logging`` and counted by ``flantune inspect``.
File sources validate every record when they build their index (on first use), so bad input
surfaces before training starts; TFDS and reasoning-gym sources check a record when it is read
(under ``"skip"``, every record once on first use, to know which to leave out).

Modules by kind: :mod:`.base` (the interface and record checks), :mod:`.files`,
:mod:`.iterable`, :mod:`.tfds`, :mod:`.reasoning_gym`, :mod:`.splits`.
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
