"""t5x-style logical axis rules: logical names (`embed`, `mlp`, ...) -> mesh axes.

Rules are an ordered tuple of `(logical name, mesh axes)` pairs read with Flax's priority
semantics (`flax.linen.logical_to_mesh_axes`): earlier rules win, a mesh axis is used at most
once per array, and a logical name may have several rules, the first usable one applying. The
same rules drive parameter shardings (here) and activation constraints (Flax, inside the model).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence

import flax.linen as nn
import gin
import jax
from jax.sharding import Mesh, PartitionSpec

from flantune.partitioning.errors import AxisRulesError
from flantune.partitioning.mesh import BATCH_AXES, MESH_AXES

logger = logging.getLogger(__name__)

MeshAxes = str | tuple[str, ...] | None
LogicalAxisRules = tuple[tuple[str, MeshAxes], ...]

# Every logical axis name the models use for parameters or activations.
LOGICAL_AXES = ("batch", "length", "vocab", "embed", "mlp", "heads", "kv", "joined_kv",
                "relpos_buckets", "layers")

# Never sharded in any preset: per-head width, sequence length, position buckets, scan axis.
_ALWAYS_REPLICATED: LogicalAxisRules = (
    ("length", None), ("kv", None), ("relpos_buckets", None), ("layers", None))

RULE_PRESETS: dict[str, LogicalAxisRules] = {
    # Parameters replicated; the batch split over every device.
    "data_parallel": (
        ("batch", BATCH_AXES), ("vocab", None), ("embed", None), ("mlp", None),
        ("heads", None), ("joined_kv", None), *_ALWAYS_REPLICATED),
    # ZeRO-3 style: each parameter split over `fsdp` along `embed` (every matrix has it), or
    # along its next shardable dimension when `embed` does not divide. Activations keep only the
    # batch split: `batch` takes `fsdp` first, so `embed` activations stay whole.
    "fsdp": (
        ("batch", BATCH_AXES), ("embed", "fsdp"), ("mlp", "fsdp"), ("heads", "fsdp"),
        ("joined_kv", "fsdp"), ("vocab", "fsdp"), *_ALWAYS_REPLICATED),
    # 2-D: Megatron-style tensor parallelism over `model` (heads, MLP and vocabulary) with the
    # remaining weight dimension (`embed`) split over `fsdp`.
    "model_parallel_2d": (
        ("batch", BATCH_AXES), ("vocab", "model"), ("mlp", "model"), ("heads", "model"),
        ("joined_kv", "model"), ("embed", "fsdp"), *_ALWAYS_REPLICATED),
}

_logged: set[str] = set()


def _log_once(message: str) -> None:
    if message not in _logged:
        _logged.add(message)
        logger.info(message)


def _mesh_axes_tuple(target: MeshAxes) -> tuple[str, ...]:
    if target is None:
        return ()
    return (target,) if isinstance(target, str) else tuple(target)


def _check_rule(rule: object, where: str) -> tuple[str, MeshAxes]:
    """A well-formed `(logical name, mesh axes)` pair, or a clear error."""
    if not isinstance(rule, Sequence) or isinstance(rule, str) or len(rule) != 2:
        raise AxisRulesError(f"{where}: rule {rule!r} must be a (logical name, mesh axes) pair.")
    name, target = rule
    if not isinstance(name, str):
        raise AxisRulesError(f"{where}: rule {rule!r} has a non-string logical name.")
    if target is not None and not isinstance(target, str):
        if not isinstance(target, Sequence) or not all(isinstance(a, str) for a in target):
            raise AxisRulesError(
                f"{where}: rule {rule!r} must map to None, a mesh axis or a tuple of mesh axes.")
        target = tuple(target)
    unknown = [axis for axis in _mesh_axes_tuple(target) if axis not in MESH_AXES]
    if unknown:
        raise AxisRulesError(
            f"{where}: rule {rule!r} names mesh axes {unknown}; the mesh axes are {MESH_AXES}.")
    return name, target


@gin.configurable(module="flantune")
def axis_rules(preset: str = "data_parallel",
               overrides: Sequence[Sequence[object]] = ()) -> LogicalAxisRules:
    """The rules of `preset`, with every rule for a name in `overrides` replaced by the
    overrides for that name (kept at the position of the replaced rules; new names go last)."""
    if preset not in RULE_PRESETS:
        raise AxisRulesError(
            f"unknown partitioning preset {preset!r}; choose one of {sorted(RULE_PRESETS)}.")
    checked = [_check_rule(rule, f"axis_rules overrides[{i}]")
               for i, rule in enumerate(overrides)]
    overridden = {name for name, _ in checked}
    rules: list[tuple[str, MeshAxes]] = []
    placed: set[str] = set()
    for name, target in RULE_PRESETS[preset]:
        if name not in overridden:
            rules.append((name, target))
        elif name not in placed:
            rules.extend(rule for rule in checked if rule[0] == name)
            placed.add(name)
    rules.extend(rule for rule in checked if rule[0] not in placed)
    return tuple(rules)


def logical_to_mesh(axes: Sequence[str | None], rules: LogicalAxisRules, mesh: Mesh,
                    shape: Sequence[int] | None = None) -> PartitionSpec:
    """The mesh `PartitionSpec` for an array with logical `axes` (None: replicated dim).

    Follows Flax's rule priority; mesh axes of size 1 are dropped. With `shape`, a rule whose
    mesh axes do not divide that dimension is skipped (the next rule for the name, if any, is
    tried; otherwise the dimension is replicated, logged once) so small models still run on
    large meshes.
    """
    axes = tuple(axes)
    if shape is not None and len(shape) != len(axes):
        raise AxisRulesError(f"logical axes {axes} and shape {tuple(shape)} differ in rank.")
    names = [name for name in axes if name is not None]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise AxisRulesError(f"logical axes {axes} repeat {duplicated}; each may appear once.")
    covered = {rule[0] for rule in rules}
    missing = [name for name in names if name not in covered]
    if missing:
        raise AxisRulesError(
            f"logical axes {missing} (of {axes}) have no rule; add e.g. "
            f"('{missing[0]}', None) to the rules (axis_rules overrides).")
    result: list[MeshAxes] = [None] * len(axes)
    decided = [name is None for name in axes]
    used: set[str] = set()
    for rule in rules:
        name, target = _check_rule(rule, "logical axis rules")
        if name not in axes or decided[axes.index(name)]:
            continue
        pos = axes.index(name)
        mesh_axes = tuple(a for a in _mesh_axes_tuple(target) if mesh.shape.get(a, 1) > 1)
        if used.intersection(mesh_axes):
            continue
        if not mesh_axes:
            decided[pos] = True
            continue
        ways = math.prod(mesh.shape[a] for a in mesh_axes)
        if shape is not None and shape[pos] % ways:
            _log_once(f"dimension {name}={shape[pos]} of an array with axes {axes} is not "
                      f"divisible by mesh axes {mesh_axes} ({ways} ways); not split over them.")
            continue
        result[pos] = mesh_axes[0] if len(mesh_axes) == 1 else mesh_axes
        decided[pos] = True
        used.update(mesh_axes)
    return PartitionSpec(*result)


@contextlib.contextmanager
def activation_rules(rules: LogicalAxisRules, mesh: Mesh) -> Iterator[None]:
    """Within this context, tracing a model constrains its activations by logical name: `mesh`
    is the current mesh and `rules` are Flax's logical axis rules."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        yield
