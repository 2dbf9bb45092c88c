"""NamedShardings for model parameters (from their logical axis metadata) and optimizer state."""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping
from typing import Any

import jax
from flax import nnx
from flax.nnx import traversals
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from flantune.partitioning.errors import AxisRulesError
from flantune.partitioning.rules import LogicalAxisRules, logical_to_mesh

logger = logging.getLogger(__name__)

PyTree = Any
KeyPath = tuple[Hashable, ...]


def _path_text(path: KeyPath) -> str:
    return "/".join(str(key) for key in path)


def param_shardings(abstract_state: nnx.State | nnx.Module, mesh: Mesh,
                    rules: LogicalAxisRules) -> PyTree:
    """A NamedSharding per parameter, as a nested dict shaped like `state.to_pure_dict()`.

    `abstract_state` is `nnx.state(model, nnx.Param)` of a (possibly `nnx.eval_shape`d) model, or
    the model itself; each parameter's logical axes come from its `out_sharding` metadata.
    """
    if isinstance(abstract_state, nnx.Module):
        abstract_state = nnx.state(abstract_state, nnx.Param)
    flat: dict[KeyPath, NamedSharding] = {}
    for path, variable in nnx.to_flat_state(abstract_state):
        where = _path_text(path)
        axes = variable.get_metadata().get("out_sharding") if isinstance(
            variable, nnx.Variable) else None
        if not axes:
            raise AxisRulesError(
                f"parameter {where} has no logical axis names (out_sharding metadata); create it "
                "with flantune.models.layers.logical_param so it can be sharded.")
        shape = variable.get_value().shape
        try:
            spec = logical_to_mesh(axes, rules, mesh, shape)
        except AxisRulesError as err:
            raise AxisRulesError(f"parameter {where} {tuple(shape)}: {err}") from err
        flat[path] = NamedSharding(mesh, spec)
    return traversals.unflatten_mapping(flat)


def _key_name(key: Any) -> Hashable:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return getattr(key, attr)
    return str(key)


def _normalized(path: tuple[Any, ...]) -> KeyPath:
    return tuple(_key_name(key) for key in path)


def _owning_param(path: KeyPath, params: Mapping[KeyPath, Any]) -> KeyPath | None:
    """The longest parameter path that ends `path` (optax states embed the params' tree)."""
    for start in range(len(path)):
        if path[start:] in params:
            return path[start:]
    return None


def _without_dim(spec: PartitionSpec, ndim: int, dim: int) -> PartitionSpec:
    entries = list(spec) + [None] * (ndim - len(spec))
    del entries[dim]
    return PartitionSpec(*entries)


def _sharded_ways(spec: PartitionSpec, mesh: Mesh) -> int:
    ways = 1
    for entry in spec:
        for axis in (entry,) if isinstance(entry, str) else (entry or ()):
            ways *= mesh.shape[axis]
    return ways


def _statistic_spec(shape: tuple[int, ...], param_shape: tuple[int, ...] | None,
                    spec: PartitionSpec, mesh: Mesh, where: str) -> PartitionSpec:
    """The spec of an optimizer leaf belonging to a parameter with `spec`."""
    if param_shape is not None and shape == param_shape:
        return spec
    if param_shape is not None and len(shape) + 1 == len(param_shape):
        # A factored second-moment statistic (Adafactor): the param's shape minus one dim.
        for dim in range(len(param_shape)):
            if param_shape[:dim] + param_shape[dim + 1:] == shape:
                return _without_dim(spec, len(param_shape), dim)
        return PartitionSpec()
    if param_shape is None and len(shape) == len(spec):
        return spec if _divides(shape, spec, mesh) else PartitionSpec()
    if param_shape is None and len(shape) + 1 == len(spec):
        # Without the parameter's shape the removed dimension is ambiguous; take the candidate
        # that shards the most (every candidate divides the statistic's shape evenly).
        candidates = [_without_dim(spec, len(spec), dim) for dim in range(len(spec))]
        valid = [c for c in candidates if _divides(shape, c, mesh)]
        if valid:
            _log_guess_once(where)
            return max(valid, key=lambda c: _sharded_ways(c, mesh))
    return PartitionSpec()


def _divides(shape: tuple[int, ...], spec: PartitionSpec, mesh: Mesh) -> bool:
    for size, entry in zip(shape, spec, strict=False):
        if size % _sharded_ways(PartitionSpec(entry), mesh):
            return False
    return True


_logged: set[str] = set()


def _log_guess_once(where: str) -> None:
    if where not in _logged:
        _logged.add(where)
        logger.info("optimizer statistic %s: parameter shape unknown, pass param_shapes to "
                    "opt_state_shardings for exact specs.", where)


def opt_state_shardings(opt_state_shapes: PyTree, params_shardings: PyTree, mesh: Mesh,
                        param_shapes: PyTree | None = None) -> PyTree:
    """A NamedSharding per optimizer-state leaf, in the optimizer state's tree structure.

    A leaf is matched to a parameter by tree path (its path ends with the parameter's path, as
    in optax's `mu`/`nu`/`v_row`/... trees). A leaf shaped like its parameter gets the parameter's
    sharding; a leaf with the parameter's shape minus one dimension (Adafactor's factored
    row/column statistics) gets the parameter's spec minus that dimension; everything else
    (counters, scalars, placeholders) is replicated.

    `param_shapes` (a tree like the params, of arrays or ShapeDtypeStructs) tells which dimension
    a factored statistic dropped. Without it, a statistic whose shape fits several dropped
    dimensions gets the most-sharded spec that divides it: still a valid layout, but possibly
    not the parameter's own split, so pass it when the optimizer factors (Adafactor).
    """
    params = {_normalized(path): sharding for path, sharding in
              jax.tree_util.tree_leaves_with_path(params_shardings)}
    shapes: dict[KeyPath, tuple[int, ...]] = {}
    if param_shapes is not None:
        shapes = {_normalized(path): tuple(leaf.shape) for path, leaf in
                  jax.tree_util.tree_leaves_with_path(param_shapes)}
    replicated = NamedSharding(mesh, PartitionSpec())

    def leaf_sharding(path: tuple[Any, ...], leaf: Any) -> NamedSharding:
        shape = tuple(getattr(leaf, "shape", ()))
        owner = _owning_param(_normalized(path), params)
        if owner is None or not shape:
            return replicated
        spec = params[owner].spec
        statistic = _statistic_spec(shape, shapes.get(owner), spec, mesh,
                                    jax.tree_util.keystr(path))
        return NamedSharding(mesh, statistic)

    return jax.tree_util.tree_map_with_path(leaf_sharding, opt_state_shapes)
