"""A sweep's grid: axes of gin bindings and the variants (their cartesian product) they make.

An axis is written ``NAME=[v1, v2, ...]`` where NAME is a gin macro (``HELDOUT_CLUSTERS``) or a
binding (``flantune.ablation_mixture.templates_per_task``) and the values are Python literals.
Each variant gets a directory name made from its values, readable and stable across runs.
"""

from __future__ import annotations

import ast
import dataclasses
import itertools
import re
from collections.abc import Mapping, Sequence
from typing import Any

from flantune.data.seeding import stable_hash


class SweepError(ValueError):
    """A malformed sweep definition, with what to write instead."""


@dataclasses.dataclass(frozen=True)
class Axis:
    name: str
    values: tuple[Any, ...]

    @property
    def short_name(self) -> str:
        """The last dotted component, e.g. ``templates_per_task``."""
        return self.name.rsplit(".", 1)[-1]


_NAME = re.compile(r"^[A-Za-z_][\w.]*$")


def parse_axis(text: str) -> Axis:
    """``NAME=[v1, v2]`` -> Axis (values are Python literals)."""
    name, sep, values = text.partition("=")
    name = name.strip()
    if not sep or not _NAME.match(name):
        raise SweepError(f"Sweep axis '{text}': write NAME=[value, ...], e.g. "
                         "HELDOUT_CLUSTERS=[['words'], ['logic']].")
    try:
        parsed = ast.literal_eval(values.strip())
    except (ValueError, SyntaxError) as err:
        raise SweepError(f"Sweep axis '{name}': values {values.strip()!r} are not a Python "
                         f"literal list ({err}).") from None
    return axis(name, parsed)


def axis(name: str, values: Any) -> Axis:
    if not isinstance(values, list | tuple) or not values:
        raise SweepError(f"Sweep axis '{name}': give a non-empty list of values, got {values!r}.")
    if len({repr(v) for v in values}) != len(values):
        raise SweepError(f"Sweep axis '{name}' repeats a value: {values!r}.")
    return Axis(name, tuple(values))


def axes_from_mapping(mapping: Mapping[str, Sequence[Any]]) -> list[Axis]:
    return [axis(name, values) for name, values in mapping.items()]


@dataclasses.dataclass(frozen=True)
class Variant:
    """One point of the grid: its bindings and the directory name derived from them."""

    bindings: tuple[tuple[str, Any], ...]
    name: str

    def gin_bindings(self) -> list[str]:
        """The variant as ``--gin.NAME=VALUE`` arguments (values as Python literals)."""
        return [f"--gin.{name}={value!r}" for name, value in self.bindings]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.bindings)


def _slug(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "+".join(_slug(v) for v in value) or "none"
    text = re.sub(r"[^A-Za-z0-9.+-]+", "-", str(value)).strip("-")
    return text or "none"


def variant_name(axes: Sequence[Axis], values: Sequence[Any]) -> str:
    parts = [f"{a.short_name}={_slug(v)}" for a, v in zip(axes, values, strict=True)]
    name = ",".join(parts)
    if len(name) > 120:  # keep directory names short; the hash keeps them unique
        name = name[:100] + f"-{stable_hash(repr(values)) & 0xFFFFFFFF:08x}"
    return name


def variants(axes: Sequence[Axis]) -> list[Variant]:
    """The cartesian product of the axes, first axis slowest."""
    names = [a.name for a in axes]
    if len(set(names)) != len(names):
        raise SweepError(f"Sweep axes repeat a name: {names}.")
    out = []
    for values in itertools.product(*(a.values for a in axes)):
        out.append(Variant(tuple(zip(names, values, strict=True)), variant_name(axes, values)))
    if len({v.name for v in out}) != len(out):
        raise SweepError("Two variants map to the same directory name; make the axis values "
                         "differ in more than punctuation.")
    return out
