"""Batch shardings and global batches assembled from each process's rows."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from flantune.partitioning.errors import BatchSizeError
from flantune.partitioning.mesh import BATCH_AXES, data_parallel_size


def batch_sharding(mesh: Mesh, rank: int = 2) -> NamedSharding:
    """Rank-`rank` arrays split on their leading (batch) dimension over the batch mesh axes."""
    axes = tuple(axis for axis in BATCH_AXES if mesh.shape.get(axis, 1) > 1)
    leading = axes[0] if len(axes) == 1 else (axes or None)
    return NamedSharding(mesh, PartitionSpec(leading, *([None] * (rank - 1))))


def _batch_describe(mesh: Mesh) -> str:
    return " x ".join(f"{axis}={mesh.shape[axis]}" for axis in BATCH_AXES if axis in mesh.shape)


def _feeding_processes(mesh: Mesh) -> int:
    """How many processes hold distinct rows of a batch (processes holding the same rows, e.g.
    across a process-spanning `model` axis, count once: they must load the same rows)."""
    dp = data_parallel_size(mesh)
    indices = batch_sharding(mesh, 1).devices_indices_map((dp,))
    rows_by_process: dict[int, set[int]] = {}
    for device, (rows,) in indices.items():
        rows_by_process.setdefault(device.process_index, set()).update(
            range(*rows.indices(dp)))
    return len({frozenset(rows) for rows in rows_by_process.values()})


def check_batch_size(global_batch_size: int, mesh: Mesh) -> None:
    """Raises BatchSizeError unless the global batch splits evenly over the data-parallel devices
    of `mesh` and over the processes feeding them."""
    dp = data_parallel_size(mesh)
    if not isinstance(global_batch_size, int | np.integer) or global_batch_size < 1:
        raise BatchSizeError(f"global batch size {global_batch_size!r} must be a positive int.")
    if global_batch_size % dp:
        suggestion = (global_batch_size // dp + 1) * dp
        raise BatchSizeError(
            f"global batch size {global_batch_size} is not divisible by the data-parallel size "
            f"{dp} ({_batch_describe(mesh)}); use a multiple of {dp} (e.g. {suggestion}) or "
            "change the mesh.")
    processes = _feeding_processes(mesh)
    if global_batch_size % processes:
        raise BatchSizeError(
            f"global batch size {global_batch_size} does not split evenly over the {processes} "
            f"processes feeding data (jax.process_count()={jax.process_count()}); use a "
            f"multiple of {processes}.")


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Global arrays sharded by `batch_sharding` from this process's rows of each feature.

    Process i passes rows [i * B / P, (i + 1) * B / P) of the global batch of B rows (P: processes
    feeding data; with the meshes of `make_mesh` devices follow process order).
    """
    if not local_batch:
        raise BatchSizeError("global_batch got no features; pass a mapping of name -> array.")
    arrays = {name: np.asarray(value) for name, value in local_batch.items()}
    rows = {name: (array.shape[0] if array.ndim else None) for name, array in arrays.items()}
    scalars = [name for name, count in rows.items() if count is None]
    if scalars:
        raise BatchSizeError(f"batch features {scalars} are scalars; every feature needs a "
                             "leading batch dimension.")
    if len(set(rows.values())) > 1:
        raise BatchSizeError(f"batch features have different numbers of rows: {rows}; every "
                             "feature must hold the same rows.")
    local_rows = next(iter(rows.values()))
    global_rows = local_rows * _feeding_processes(mesh)
    try:
        check_batch_size(global_rows, mesh)
    except BatchSizeError as err:
        raise BatchSizeError(f"local batch of {local_rows} rows on process "
                             f"{jax.process_index()}: {err}") from err
    return {
        name: jax.make_array_from_process_local_data(
            batch_sharding(mesh, array.ndim), array, (global_rows, *array.shape[1:]))
        for name, array in arrays.items()
    }
