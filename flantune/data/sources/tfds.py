"""TensorFlow Datasets splits as record sources."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from flantune.data.errors import DataError, RecordError, UnknownNameError
from flantune.data.sources.base import OnBadRecord, RecordSource, _RecordChecker, _Screen

logger = logging.getLogger(__name__)

class TfdsSource(RecordSource):
    """A TensorFlow Datasets split, by name (e.g. ``"glue/rte:2.0.0"``), as python dicts.

    Uses TFDS random access (``as_data_source``) when the dataset was prepared in a random-access
    file format (array_record, parquet); otherwise reads the split in file order once, lazily,
    caching records as they are reached. Bytes become ``str``, numpy values python values.

    A record with a string feature that is not UTF-8 is bad: by default it raises RecordError
    when read; with ``on_bad_record="skip"`` every record is read once on first use and the bad
    ones are left out, listed in ``skipped`` and reported.
    """

    def __init__(self, name: str, split: str, *, data_dir: str | os.PathLike[str] | None = None,
                 fields: Sequence[str] | None = None, on_bad_record: OnBadRecord = "raise",
                 task: str | None = None):
        import tensorflow_datasets as tfds  # heavy: import only when used

        self.name, self.split = name, split
        self.data_dir = os.fspath(data_dir) if data_dir is not None else None
        self._checker = _RecordChecker(fmt=None, fields=None, on_bad_record=on_bad_record,
                                       task=task)
        self.skipped = self._checker.skipped
        try:
            builder = tfds.builder(name, data_dir=self.data_dir)
        except (tfds.core.registered.DatasetNotFoundError, ValueError) as err:
            raise UnknownNameError(f"unknown TFDS dataset '{name}': {_compact(err)}") from None
        self._builder = builder
        features = list(builder.info.features.keys()) if builder.info.features else []
        missing = [f for f in (fields or ()) if features and f not in features]
        if missing:
            raise DataError(f"TFDS dataset '{name}' has no feature(s) {missing}; its features "
                            f"are {features}.")
        self._random_access: Sequence[Any] | None = None
        self._cache: list[dict[str, Any] | RecordError] = []
        self._iterator: Iterator[Any] | None = None
        self._lock = threading.Lock()
        try:
            self._random_access = builder.as_data_source(split=split)
            self._open_screen(len(self._random_access))
            return
        except (NotImplementedError, ValueError, KeyError, AssertionError) as err:
            random_access_error = err
        if not builder.is_prepared():
            raise DataError(self._not_prepared_message(builder)) from None
        try:
            self._open_screen(int(builder.info.splits[split].num_examples))
        except (KeyError, ValueError) as err:
            raise DataError(f"TFDS dataset '{name}' has no split '{split}'; its splits are "
                            f"{sorted(builder.info.splits)} ({_first_line(err)})") from None
        logger.info("TFDS '%s' has no random access (%s); reading split '%s' in order.",
                    name, _first_line(random_access_error), split)

    def _not_prepared_message(self, builder: Any) -> str:
        data_dir_flag = f" --data_dir={self.data_dir}" if self.data_dir else ""
        data_dir_arg = f", data_dir={self.data_dir!r}" if self.data_dir else ""
        where = ("the data_dir given" if self.data_dir else
                 "$TFDS_DATA_DIR, default ~/tensorflow_datasets")
        manual = getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None)
        manual_step = ""
        if manual:
            manual_step = (" It needs files you download by hand first, then pass "
                           "--manual_dir=DIR to the command; TFDS says: "
                           + " ".join(str(manual).split()))
            data_dir_flag += " --manual_dir=DIR"
        return (f"TFDS dataset '{self.name}' is not prepared locally (looked in "
                f"{builder.data_dir}, under {where}). Prepare it once, with network access, "
                f"by running `tfds build {self.name}{data_dir_flag} "
                f"--file_format=array_record` (or `python -m tensorflow_datasets.scripts."
                f"download_and_prepare --datasets={self.name}{data_dir_flag}`, or in python "
                f"`tfds.builder({self.name!r}{data_dir_arg}).download_and_prepare("
                "file_format='array_record')`); array_record gives random access."
                + manual_step)

    def _open_screen(self, length: int) -> None:
        self._length = length
        self._screen = _Screen(self._checker, f"tfds:{self.name}/{self.split}", length,
                               self._read, lambda i: f"tfds:{self.name}/{self.split}[{i}]")

    def __len__(self) -> int:
        return len(self._screen)

    def _get(self, index: int) -> dict[str, Any]:
        return self._screen.get(index)

    def _read(self, index: int) -> dict[str, Any]:
        """Record ``index`` of the split; RecordError (without location) if it is bad."""
        if self._random_access is not None:
            return self._convert(self._random_access[index])
        with self._lock:
            if self._iterator is None and len(self._cache) <= index:
                import tensorflow_datasets as tfds

                dataset = self._builder.as_dataset(
                    split=self.split, shuffle_files=False,
                    read_config=tfds.ReadConfig(interleave_cycle_length=1))
                self._iterator = iter(tfds.as_numpy(dataset))
            while len(self._cache) <= index:
                try:
                    example = next(self._iterator)
                except StopIteration:
                    raise DataError(f"TFDS '{self.name}' split '{self.split}' ended after "
                                    f"{len(self._cache)} records, but its metadata says "
                                    f"{self._length}") from None
                try:  # a bad record keeps its place, so later indices stay aligned
                    self._cache.append(self._convert(example))
                except RecordError as err:
                    self._cache.append(err)
            cached = self._cache[index]
        if isinstance(cached, RecordError):
            raise RecordError(str(cached))
        return dict(cached)

    @staticmethod
    def _convert(example: Any) -> dict[str, Any]:
        try:
            return to_python(example)
        except UnicodeDecodeError as err:
            raise RecordError(f"a string feature is not valid UTF-8 ({err.reason})") from None

    def _where(self, index: int) -> str:
        return self._screen.where(self._screen.item_index(index))


def to_python(value: Any) -> Any:
    """Numpy/TFDS values -> plain python: bytes -> str, arrays -> lists, scalars -> numbers."""
    if isinstance(value, Mapping):
        return {str(k): to_python(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OSU":
            return to_python(value.tolist()) if value.ndim else to_python(value.item())
        return value.tolist()
    if isinstance(value, np.generic):
        return to_python(value.item())
    if isinstance(value, list | tuple):
        return [to_python(v) for v in value]
    return value


def _compact(err: BaseException, limit: int = 800) -> str:
    """An exception's message on one line, cut to ``limit`` characters."""
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
