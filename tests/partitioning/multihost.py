"""Runs in each of N fresh interpreters (see test_multihost.py): joins the multi-process runtime,
feeds this process's rows of a global batch and prints per-row logit sums of a sharded forward
as one JSON line, for a 2-D model-parallel mesh, an FSDP mesh and a 2-replica data-parallel
mesh."""

from __future__ import annotations

import json

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from flantune import partitioning as pt
from tests.partitioning import tiny_models as tm


def main() -> None:
    pt.initialize_distributed(timeout_seconds=120)
    process, processes = jax.process_index(), jax.process_count()
    graphdef, state = nnx.split(tm.abstract_model("t5"), nnx.Param)
    params = tm.host_params("t5")
    batch = tm.inputs("t5")
    rows = tm.BATCH // processes
    local = {name: value[process * rows:(process + 1) * rows] for name, value in batch.items()}
    result: dict = {"process_count": processes, "local_devices": jax.local_device_count()}
    meshes = {name: (tm.MESHES[name], tm.PRESET_FOR_MESH[name])
              for name in ("data4_model2", "fsdp8")}
    # Replicas across processes: a hybrid mesh, each replica's devices within one process.
    meshes["replica2"] = ({"replica": 2, "data": 4}, "data_parallel")
    for mesh_name, (sizes, preset) in meshes.items():
        mesh = pt.make_mesh(pt.MeshConfig(**sizes))
        rules = pt.axis_rules(preset)
        if mesh_name == "replica2":
            result["replica_processes"] = [
                sorted({d.process_index for d in mesh.devices[r].flat}) for r in range(2)]
        shardings = pt.param_shardings(state, mesh, rules)
        # Every process holds the same host params; each device takes its own slice.
        placed = jax.tree.map(
            lambda array, sharding: jax.make_array_from_callback(
                array.shape, sharding, lambda index, a=array: a[index]),
            params, shardings)
        global_batch = pt.global_batch(local, mesh)

        def row_sums(p, b):
            return tm.apply(graphdef, state, p, b).sum(axis=(1, 2))

        with pt.activation_rules(rules, mesh):
            sums = jax.jit(row_sums, out_shardings=NamedSharding(mesh, PartitionSpec()))(
                placed, global_batch)
        result[mesh_name] = np.asarray(sums.addressable_data(0)).tolist()
    if processes == 1:
        reference = tm.apply(graphdef, state, params, batch).sum(axis=(1, 2))
        result["unsharded"] = np.asarray(reference).tolist()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
