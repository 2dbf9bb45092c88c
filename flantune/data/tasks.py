"""The ``@flantune.task`` decorator: templated tasks registered as SeqIO tasks.

A decorated function returns the raw records of one split (a :class:`RecordSource`, or any
iterable of dicts). flantune renders them through FLAN-style templates and registers one
``seqio.Task`` per variant (zero/few-shot x options/no options, named ``{name}_{suffix}`` as in
the Flan Collection) plus ``{name}`` itself, the zero-shot variant (with options when the task
has them). Every registered name works with plain SeqIO (``seqio.get_mixture_or_task``) and with
flantune's faster, resumable batch iterator, which renders records by index.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import seqio
import tensorflow as tf

from flantune.data.errors import DataError, RecordError, TemplateError
from flantune.data.seeding import rng_for
from flantune.data.sources import IterableSource, RecordSource
from flantune.data.templates import Template
from flantune.data.variants import (
    FewShotConfig,
    Variant,
    choose_exemplar_indices,
    render_example,
    variant_task_name,
    variants_for,
)
from flantune.data.vocabulary import default_output_features, encode_batch

_VALID_NAME = re.compile(r"^[\w.:]+$")  # what seqio accepts as a task or mixture name
RecordFn = Callable[[dict[str, Any]], dict[str, Any]]
SourceFn = Callable[[str], "RecordSource | Iterable[Mapping[str, Any]]"]


class RecordTask:
    """The records of a task's splits, read through its ``source_fn`` and ``record_fn``.

    Shared by templated tasks and chat tasks; the subclass has ``name``, ``source_fn``,
    ``splits``, ``record_fn`` and calls ``_init_records()``.
    """

    name: str
    source_fn: SourceFn
    splits: tuple[str, ...]
    record_fn: RecordFn | None

    def _init_records(self) -> None:
        self._sources: dict[str, RecordSource] = {}
        self._lock = threading.Lock()

    # -- records -------------------------------------------------------------------------
    def source(self, split: str) -> RecordSource:
        """The raw records of ``split`` (built once, on first use)."""
        if split not in self.splits:
            raise DataError(
                f"Task '{self.name}' has no split '{split}'; its splits are {list(self.splits)}.")
        with self._lock:
            if split not in self._sources:
                made = self.source_fn(split)
                if not isinstance(made, RecordSource):
                    if not isinstance(made, Iterable):
                        raise DataError(
                            f"Task '{self.name}': its function returned {type(made).__name__} "
                            f"for split '{split}'; return a RecordSource or yield dict records.")
                    made = IterableSource(functools.partial(self.source_fn, split),
                                          name=f"{self.name}:{split}", task=self.name)
                self._sources[split] = made
            return self._sources[split]

    def num_records(self, split: str) -> int:
        return len(self.source(split))

    def record(self, split: str, index: int) -> dict[str, Any]:
        """Record ``index`` of ``split`` after the task's ``record_fn``."""
        source = self.source(split)
        raw = source[index]
        if self.record_fn is None:
            return dict(raw)
        try:
            return self.record_fn(dict(raw))
        except DataError:
            raise
        except Exception as err:  # noqa: BLE001 - re-raised with the record's location.
            raise RecordError(f"record_fn failed: {type(err).__name__}: {err}",
                              path=source.where(index), task=self.name) from err


@dataclasses.dataclass(eq=False)
class FlanTask(RecordTask):
    """A templated task: where its records come from, how they are rendered and scored."""

    name: str
    source_fn: SourceFn
    templates: tuple[Template, ...]
    splits: tuple[str, ...] = ("train", "validation")
    record_fn: RecordFn | None = None
    has_options: bool = False
    few_shot: FewShotConfig | None = None
    variants: tuple[Variant, ...] = ()
    output_features: Mapping[str, seqio.Feature] = dataclasses.field(
        default_factory=default_output_features)
    postprocess_fn: Callable | None = None
    metric_fns: tuple[Callable, ...] = ()
    seed: int = 0
    cluster: str | None = None
    description: str = ""

    def __post_init__(self):
        self._init_records()
        self._exemplars: dict[int, dict[str, Any]] = {}
        if not self.templates:
            raise DataError(f"Task '{self.name}' has no templates; give it at least one.")

    def exemplar(self, index: int) -> dict[str, Any]:
        """Train record ``index`` as a few-shot exemplar (the pool is cached: it is reused)."""
        cached = self._exemplars.get(index)
        if cached is None:
            cached = self._exemplars[index] = self.record("train", index)
        return dict(cached)

    # -- rendering ----------------------------------------------------------------------
    def task_name(self, variant: Variant) -> str:
        return variant_task_name(self.name, variant)

    @property
    def default_variant(self) -> Variant:
        return Variant.ZS_OPT if Variant.ZS_OPT in self.variants else Variant.ZS_NOOPT

    def render(self, split: str, index: int, variant: Variant, *, epoch: int = 0,
               length_fn: Callable[[str], int] | None = None) -> dict[str, Any]:
        """Renders record ``index`` of ``split`` as ``{"inputs": str, "targets": str, ...}``."""
        record = self.record(split, index)
        key = (self.name, split, index, epoch)
        exemplars: list[dict[str, Any]] = []
        few_shot = variant in (Variant.FS_OPT, Variant.FS_NOOPT)
        if few_shot:
            if self.few_shot is None:
                raise DataError(f"Task '{self.name}' has no few-shot configuration.")
            pool = min(self.few_shot.pool_size, self.num_records("train"))
            exclude = index if split == "train" else None
            # A few spare candidates: render_example skips ones that do not fit the template.
            picks = choose_exemplar_indices(pool, self.few_shot.max_exemplars + 2, seed=self.seed,
                                            key=key, exclude=exclude)
            exemplars = [self.exemplar(j) for j in picks]
        try:
            return render_example(
                self.templates, record, variant=variant, seed=self.seed, key=key,
                exemplars=exemplars, length_fn=length_fn,
                few_shot=self.few_shot if few_shot else None, task=self.name)
        except TemplateError as err:
            raise TemplateError(f"{err} (record at {self.source(split).where(index)})") from None


# Registered flantune tasks by seqio task name -> (task, variant).
_FLAN_TASKS: dict[str, tuple[FlanTask, Variant]] = {}


def flan_task_for(seqio_task_name: str) -> tuple[FlanTask, Variant] | None:
    """The flantune task and variant behind a seqio task name, or None for plain seqio tasks."""
    return _FLAN_TASKS.get(seqio_task_name)


def registered_flan_tasks() -> list[FlanTask]:
    """Every flantune task, once each, in registration order."""
    seen: dict[str, FlanTask] = {}
    for flan_task, _ in _FLAN_TASKS.values():
        seen.setdefault(flan_task.name, flan_task)
    return list(seen.values())


class RecordDataSource(seqio.DataSource):
    """A seqio DataSource over a task's records, read by index in seeded order and sharded by
    index; a subclass says what one record becomes (``_example``) and its ``_signature``."""

    def __init__(self, task: RecordTask):
        self._task = task
        super().__init__(splits=task.splits, caching_permitted=True)

    @property
    def supports_arbitrary_sharding(self) -> bool:
        return True

    def list_shards(self, split: str) -> Sequence[str]:
        return [split]

    def num_input_examples(self, split: str) -> int:
        return self._task.num_records(split)

    def _signature(self) -> dict[str, tf.TensorSpec]:
        raise NotImplementedError

    def _example(self, split: str, index: int) -> dict[str, Any]:
        raise NotImplementedError

    def get_dataset(self, split: str = "train", shuffle: bool = True, seed: int | None = None,
                    shard_info: seqio.ShardInfo | None = None, *, sequence_length=None,
                    use_cached: bool = False, num_epochs: int | None = 1) -> tf.data.Dataset:
        del sequence_length, use_cached
        shard_index, num_shards = (0, 1) if shard_info is None else (shard_info.index,
                                                                     shard_info.num_shards)
        task = self._task
        count = task.num_records(split)

        def generate():
            order = np.arange(count)
            if shuffle:
                order = rng_for(task.seed if seed is None else seed, task.name, split,
                                "source_order").permutation(count)
            for index in order[shard_index::num_shards]:
                yield self._example(split, int(index))

        dataset = tf.data.Dataset.from_generator(generate, output_signature=self._signature())
        return dataset.repeat(num_epochs) if num_epochs != 1 else dataset


class FlanDataSource(RecordDataSource):
    """A seqio DataSource that renders a flantune task's records for one variant."""

    def __init__(self, flan_task: FlanTask, variant: Variant):
        super().__init__(flan_task)
        self._variant = variant
        self._length_fn = token_length_fn(flan_task.output_features)

    def _signature(self) -> dict[str, tf.TensorSpec]:
        return {"inputs": tf.TensorSpec((), tf.string), "targets": tf.TensorSpec((), tf.string)}

    def _example(self, split: str, index: int) -> dict[str, Any]:
        rendered = self._task.render(split, index, self._variant, length_fn=self._length_fn)
        return {"inputs": rendered["inputs"], "targets": rendered["targets"]}


def token_length_fn(output_features: Mapping[str, seqio.Feature]) -> Callable[[str], int]:
    """Counts tokens of a text with the task's inputs vocabulary (used to cap few-shot prompts)."""
    feature = (output_features.get("inputs") or output_features.get("targets")
               or next(iter(output_features.values())))
    vocabulary = feature.vocabulary

    def length(text: str) -> int:
        return len(encode_batch(vocabulary, [text])[0])

    return length


def register(flan_task: FlanTask) -> FlanTask:
    """Registers every variant of ``flan_task`` (and its plain name) as a seqio Task."""
    names = {flan_task.name: flan_task.default_variant}
    names.update({flan_task.task_name(v): v for v in flan_task.variants})
    for task_name, variant in names.items():
        previous = _FLAN_TASKS.get(task_name)
        if task_name in seqio.TaskRegistry.names():
            same_definition = previous is not None and (
                previous[0].source_fn.__qualname__ == flan_task.source_fn.__qualname__)
            if not same_definition:
                raise DataError(
                    f"Task '{task_name}' is already registered; pick another name for "
                    f"'{flan_task.source_fn.__qualname__}'.")
            seqio.TaskRegistry.remove(task_name)
        seqio.TaskRegistry.add(
            task_name,
            source=FlanDataSource(flan_task, variant),
            preprocessors=[seqio.preprocessors.tokenize,
                           seqio.preprocessors.append_eos_after_trim],
            output_features=dict(flan_task.output_features),
            postprocess_fn=flan_task.postprocess_fn,
            metric_fns=list(flan_task.metric_fns),
        )
        _FLAN_TASKS[task_name] = (flan_task, variant)
    return flan_task


_DEFAULT_FEW_SHOT = FewShotConfig()


def task(name: str, *, templates: Sequence[Template],
         splits: Sequence[str] = ("train", "validation"), record_fn: RecordFn | None = None,
         has_options: bool = False, few_shot: FewShotConfig | None = _DEFAULT_FEW_SHOT,
         variants: Sequence[Variant] | None = None,
         output_features: Mapping[str, seqio.Feature] | None = None,
         postprocess_fn: Callable | None = None, metric_fns: Sequence[Callable] = (),
         seed: int = 0, cluster: str | None = None) -> Callable[[SourceFn], FlanTask]:
    """Registers the decorated ``fn(split)`` as a templated task (see the module docstring).

    Args:
      name: the task name; variants are registered as ``{name}_{zsopt|zsnoopt|fsopt|fsnoopt}``.
      templates: FLAN-style templates; each example is rendered with one, chosen by seed.
      splits: the splits ``fn`` can produce. Few-shot exemplars come from ``"train"``.
      record_fn: optional per-record transform applied before templating (e.g. derive fields).
      has_options: whether records carry an ``options`` list (enables the options variants).
      few_shot: few-shot settings, or None for a task without few-shot variants.
      variants: which variants to register (default: every one that applies).
      output_features: seqio features (default: inputs/targets over the configured vocabulary).
      postprocess_fn, metric_fns: as for ``seqio.Task``.
      seed: seeds template, option-style and exemplar choices.
      cluster: a label grouping related tasks (for held-out-cluster evaluation).
    """
    if not _VALID_NAME.match(name):
        raise DataError(f"Task name '{name}' is not valid for SeqIO: use letters, digits, "
                        "'_', ':' and '.' only.")

    def decorate(fn: SourceFn) -> FlanTask:
        chosen = tuple(variants) if variants is not None else tuple(
            variants_for(templates, has_options))
        if few_shot is None:
            chosen = tuple(v for v in chosen if v in (Variant.ZS_OPT, Variant.ZS_NOOPT))
        flan_task = FlanTask(
            name=name, source_fn=fn, templates=tuple(templates), splits=tuple(splits),
            record_fn=record_fn, has_options=has_options, few_shot=few_shot, variants=chosen,
            output_features=output_features or default_output_features(),
            postprocess_fn=postprocess_fn, metric_fns=tuple(metric_fns), seed=seed,
            cluster=cluster, description=(fn.__doc__ or "").strip().split("\n")[0])
        functools.update_wrapper(flan_task, fn, assigned=("__module__", "__doc__"), updated=())
        return register(flan_task)

    return decorate
