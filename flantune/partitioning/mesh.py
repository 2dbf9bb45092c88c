"""The device mesh: named axes (replica, data, fsdp, model) sized from configuration."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import gin
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh

from flantune.partitioning.errors import MeshShapeError

MESH_AXES = ("replica", "data", "fsdp", "model")
# Mesh axes the batch dimension is split over, outermost first.
BATCH_AXES = ("replica", "data", "fsdp")


@gin.configurable(module="flantune")
@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Mesh axis sizes; one of them may be -1, meaning "all remaining devices".

    `replica` is the outermost axis: across slices (or hosts) it is laid out over the slow
    network, so only gradients are reduced over it.
    """

    replica: int = 1
    data: int = -1
    fsdp: int = 1
    model: int = 1

    def __post_init__(self) -> None:
        for name in MESH_AXES:
            size = getattr(self, name)
            if not isinstance(size, int) or isinstance(size, bool) or (size < 1 and size != -1):
                raise MeshShapeError(
                    f"MeshConfig.{name}={size!r} must be a positive int or -1 (the remaining "
                    "devices).")
        wildcards = [name for name in MESH_AXES if getattr(self, name) == -1]
        if len(wildcards) > 1:
            raise MeshShapeError(
                f"MeshConfig has -1 for {wildcards}; at most one axis may take the remaining "
                "devices. Give explicit sizes to the others.")

    def sizes(self) -> dict[str, int]:
        """The configured sizes by axis name (may contain one -1)."""
        return {name: getattr(self, name) for name in MESH_AXES}


def mesh_shape(config: MeshConfig, num_devices: int) -> tuple[int, ...]:
    """Axis sizes in `MESH_AXES` order with -1 resolved against `num_devices`."""
    sizes = config.sizes()
    known = math.prod(size for size in sizes.values() if size != -1)
    described = " x ".join(f"{name}={size}" for name, size in sizes.items())
    if -1 in sizes.values():
        if num_devices % known:
            raise MeshShapeError(
                f"mesh {described}: the fixed axes multiply to {known}, which does not divide "
                f"the {num_devices} devices (jax.device_count()={jax.device_count()}); choose "
                f"sizes whose product divides {num_devices}.")
        sizes = {name: num_devices // known if size == -1 else size
                 for name, size in sizes.items()}
    elif known != num_devices:
        raise MeshShapeError(
            f"mesh {described} needs {known} devices but {num_devices} are available "
            f"(jax.device_count()={jax.device_count()}); make the sizes multiply to "
            f"{num_devices} or set one axis to -1.")
    return tuple(sizes[name] for name in MESH_AXES)


def _granules(devices: Sequence[jax.Device]) -> tuple[str, int] | None:
    """The attribute (slice or process) that splits `devices` into several granules, if any."""
    for attr in ("slice_index", "process_index"):
        values = {getattr(device, attr, None) for device in devices}
        if None not in values and len(values) > 1:
            return attr, len(values)
    return None


def make_mesh(config: MeshConfig | None = None,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A `Mesh` over `devices` (default: all) with axes `MESH_AXES` sized by `config` (default:
    `MeshConfig()` as bound by gin, i.e. all devices on `data`).

    When `replica` spans several slices (or processes), devices are grouped so each replica
    block stays within one slice (hybrid mesh); otherwise the devices are laid out in order, which
    keeps each process's devices contiguous along the batch axes.
    """
    config = MeshConfig() if config is None else config
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(config, len(devices))
    replica = shape[0]
    granules = _granules(devices)
    if replica > 1 and granules is not None and replica % granules[1] == 0:
        attr, count = granules
        inner = (replica // count, *shape[1:])
        outer = (count,) + (1,) * (len(shape) - 1)
        device_array = mesh_utils.create_hybrid_device_mesh(
            inner, outer, devices, process_is_granule=attr == "process_index")
    else:
        device_array = mesh_utils.create_device_mesh(shape, devices)
    return Mesh(np.asarray(device_array), MESH_AXES, axis_types=(AxisType.Auto,) * len(shape))


def data_parallel_size(mesh: Mesh) -> int:
    """How many ways the batch is split: the product of the mesh's batch axes."""
    return math.prod(mesh.shape[axis] for axis in BATCH_AXES if axis in mesh.shape)
