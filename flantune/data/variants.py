"""Zero-/few-shot x options/no-options variants of a task, and rendering one example for one.

As in the Flan Collection, a templated task expands into up to four variants (``zsopt``,
``zsnoopt``, ``fsopt``, ``fsnoopt``), each usable as its own mixture member. Few-shot
exemplars come from the first ``pool_size`` train records, never the example itself, are
rendered with the query's template and are added only while the inputs stay under a token
budget (Flan 2022 capped few-shot inputs at 1,920 tokens).

SeqIO has few-shot support (``seqio.experimental.FewshotDataSource`` and
``fewshot_preprocessor``), but it draws exemplars from a shuffled train stream, so the
choice is not keyed per example, cannot exclude the example itself and is not capped by
length; hence the few lines here.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from flantune.data.errors import TemplateError
from flantune.data.seeding import rng_for
from flantune.data.templates import (
    Template,
    check_fields,
    choose_template,
    draw_option_style,
    render,
)


class Variant(enum.Enum):
    """A way of presenting a task: zero-/few-shot, with/without answer options."""

    ZS_OPT = "zsopt"
    ZS_NOOPT = "zsnoopt"
    FS_OPT = "fsopt"
    FS_NOOPT = "fsnoopt"

    @property
    def suffix(self) -> str:
        return self.value

    @property
    def few_shot(self) -> bool:
        return self in (Variant.FS_OPT, Variant.FS_NOOPT)

    @property
    def with_options(self) -> bool:
        return self in (Variant.ZS_OPT, Variant.FS_OPT)


def variants_for(templates: Sequence[Template], has_options: bool) -> list[Variant]:
    """The variants a task supports: options variants only for tasks whose records have
    options (and a template that accepts them); no-options variants only if some template
    works without options."""
    with_opt = has_options and any(t.usable(with_options=True) for t in templates)
    without_opt = any(t.usable(with_options=False) for t in templates)
    return [v for v in Variant if (with_opt if v.with_options else without_opt)]


def variant_task_name(task: str, variant: Variant) -> str:
    """The name of a task's variant, e.g. ``gsm_symbolic_fsnoopt``."""
    return f"{task}_{variant.suffix}"


@dataclasses.dataclass(frozen=True)
class FewShotFormat:
    """How exemplars and the query are laid out in a few-shot prompt."""

    input_prefix: str = ""
    target_prefix: str = ""
    pair_separator: str = "\n\n"      # between an exemplar's inputs and its targets
    example_separator: str = "\n\n\n"  # between exemplars (and before the query)


DEFAULT_FEW_SHOT_FORMATS: tuple[FewShotFormat, ...] = (
    FewShotFormat("", "", "\n\n", "\n\n\n"),
    FewShotFormat("", "", "\n", "\n\n"),
    FewShotFormat("Q: ", "A: ", "\n", "\n\n"),
    FewShotFormat("Input: ", "Output: ", "\n", "\n\n"),
    FewShotFormat("Problem: ", "Solution: ", "\n", "\n\n"),
)


@dataclasses.dataclass(frozen=True)
class FewShotConfig:
    """Few-shot settings.

    Attributes:
      max_exemplars: at most this many exemplars per prompt.
      max_input_tokens: exemplars are added only while the inputs stay within this length.
      pool_size: exemplars are drawn from the first ``pool_size`` train records.
      formats: layouts, one drawn per example.
    """

    max_exemplars: int = 3
    max_input_tokens: int = 1920
    pool_size: int = 1000
    formats: tuple[FewShotFormat, ...] = DEFAULT_FEW_SHOT_FORMATS

    def __post_init__(self) -> None:
        for field in ("max_exemplars", "max_input_tokens", "pool_size"):
            if getattr(self, field) < 1:
                raise ValueError(f"FewShotConfig.{field} must be >= 1, got "
                                 f"{getattr(self, field)}.")
        if not self.formats:
            raise ValueError("FewShotConfig.formats must name at least one layout.")


def whitespace_length(text: str) -> int:
    """Number of whitespace-separated words: the default token count for the budget."""
    return len(text.split())


def choose_exemplar_indices(pool_size: int, k: int, *, seed: int, key: tuple,
                            exclude: int | None) -> list[int]:
    """``k`` distinct indices in ``range(pool_size)`` other than ``exclude`` (fewer if the
    pool is smaller), drawn from a generator keyed by ``(seed, key)``."""
    if pool_size < 0 or k < 0:
        raise ValueError(f"pool_size and k must be >= 0, got pool_size={pool_size}, k={k}.")
    excluded = exclude is not None and 0 <= exclude < pool_size
    available = pool_size - int(excluded)
    count = min(k, available)
    if count == 0:
        return []
    rng = rng_for(seed, "fewshot_exemplars", *key)
    picks = rng.choice(available, size=count, replace=False)
    # Indices at or after the excluded one shift up by one, skipping it.
    return [int(i) + 1 if excluded and i >= exclude else int(i) for i in picks]


def _same_record(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    try:
        return a.keys() == b.keys() and all(bool(a[f] == b[f]) for f in a)
    except (ValueError, TypeError):  # e.g. arrays of different shapes; treat as different
        return False


def render_example(templates: Sequence[Template], record: Mapping[str, Any], *,
                   variant: Variant, seed: int, key: tuple,
                   exemplars: Sequence[Mapping[str, Any]] = (),
                   length_fn: Callable[[str], int] | None = None,
                   few_shot: FewShotConfig | None = None,
                   task: str = "") -> dict[str, str | int]:
    """Renders ``record`` for ``variant``.

    ``key`` identifies the example (e.g. ``(task, split, index)``); every draw (template,
    option style and order, CoT phrasing, few-shot layout) is keyed by ``(seed, key,
    variant)``. For few-shot variants ``exemplars`` are candidates in order (pass a few more
    than ``max_exemplars``): those equal to the record, to which the query's template does
    not apply, or rendering to the query's own inputs are skipped; the rest are added while
    the inputs stay within ``max_input_tokens`` by ``length_fn``. If none fits, the example
    is rendered zero-shot.

    Returns ``{"inputs", "targets", "template", "variant", "num_exemplars"}``; ``template``
    is the template's name, or its index when unnamed.
    """
    few_shot = few_shot or FewShotConfig()
    length_fn = length_fn or whitespace_length
    base = (*key, variant.suffix)
    with_options = variant.with_options
    index, template = choose_template(templates, record, with_options=with_options,
                                      rng=rng_for(seed, "template", *base), task=task)
    style = draw_option_style(rng_for(seed, "option_style", *base)) if with_options else None

    def render_one(rec: Mapping[str, Any], slot: object) -> tuple[str, str]:
        return render(template, rec, with_options=with_options, option_style=style,
                      rng=rng_for(seed, "render", *base, slot), task=task)

    inputs, targets = render_one(record, "query")
    result: dict[str, str | int] = {
        "inputs": inputs, "targets": targets, "template": template.name or str(index),
        "variant": variant.suffix, "num_exemplars": 0,
    }
    if not variant.few_shot:
        return result

    # A template whose inputs end in a cue ("Answer:") would read badly under "A:" labels.
    formats = few_shot.formats
    if template.inputs.rstrip().endswith(":"):
        formats = tuple(f for f in formats if not f.target_prefix) or formats
    fmt = formats[int(rng_for(seed, "fewshot_format", *base).integers(len(formats)))]
    query_block = f"{fmt.input_prefix}{inputs}{fmt.pair_separator}{fmt.target_prefix}".rstrip()
    blocks: list[str] = []
    for slot, exemplar in enumerate(exemplars):
        if len(blocks) == few_shot.max_exemplars:
            break
        if not isinstance(exemplar, Mapping):
            raise TemplateError(f"task '{task}', few-shot exemplar {slot}: expected a record "
                                f"mapping, got {type(exemplar).__name__}.")
        try:
            check_fields(template, exemplar, task=task, with_options=with_options)
        except TemplateError as exc:
            raise TemplateError(f"few-shot exemplar {slot}: {exc}") from None
        if _same_record(exemplar, record) or not template.applies_to(exemplar):
            continue
        ex_inputs, ex_targets = render_one(exemplar, slot)
        if ex_inputs == inputs:
            continue
        block = (f"{fmt.input_prefix}{ex_inputs}{fmt.pair_separator}"
                 f"{fmt.target_prefix}{ex_targets}")
        candidate = fmt.example_separator.join([*blocks, block, query_block])
        if length_fn(candidate) > few_shot.max_input_tokens:
            break
        blocks.append(block)
    if blocks:
        result["inputs"] = fmt.example_separator.join([*blocks, query_block])
        result["num_exemplars"] = len(blocks)
    return result
