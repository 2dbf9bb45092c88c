"""Mesh, logical axis rules, and shardings for parameters, optimizer state and batches."""

from flantune.partitioning.batches import batch_sharding, check_batch_size, global_batch
from flantune.partitioning.distributed import initialize_distributed
from flantune.partitioning.errors import (
    AxisRulesError,
    BatchSizeError,
    DistributedInitError,
    MeshShapeError,
    PartitioningError,
)
from flantune.partitioning.mesh import (
    BATCH_AXES,
    MESH_AXES,
    MeshConfig,
    data_parallel_size,
    make_mesh,
    mesh_shape,
)
from flantune.partitioning.rules import (
    LOGICAL_AXES,
    RULE_PRESETS,
    LogicalAxisRules,
    activation_rules,
    axis_rules,
    logical_to_mesh,
)
from flantune.partitioning.state import opt_state_shardings, param_shardings

__all__ = [
    "BATCH_AXES",
    "LOGICAL_AXES",
    "MESH_AXES",
    "RULE_PRESETS",
    "AxisRulesError",
    "BatchSizeError",
    "DistributedInitError",
    "LogicalAxisRules",
    "MeshConfig",
    "MeshShapeError",
    "PartitioningError",
    "activation_rules",
    "axis_rules",
    "batch_sharding",
    "check_batch_size",
    "data_parallel_size",
    "global_batch",
    "initialize_distributed",
    "logical_to_mesh",
    "make_mesh",
    "mesh_shape",
    "opt_state_shardings",
    "param_shardings",
]
