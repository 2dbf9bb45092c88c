"""Errors raised while laying a model, its optimizer state and its batches out on a mesh."""


class PartitioningError(ValueError):
    """Base class: a mesh, rule, sharding or batch request that cannot be satisfied."""


class MeshShapeError(PartitioningError):
    """Mesh axis sizes that do not fit the available devices."""


class AxisRulesError(PartitioningError):
    """Logical axis rules that are malformed or do not cover a logical axis name."""


class BatchSizeError(PartitioningError):
    """A batch that cannot be split evenly over the data-parallel devices or the processes."""


class DistributedInitError(RuntimeError):
    """The multi-process runtime could not be started (bad address, unreachable coordinator)."""
