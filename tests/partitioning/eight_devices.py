"""Runs in a fresh interpreter with 8 simulated CPU devices (see test_shardings.py) and prints
the measurements the tests check as one JSON line."""

from __future__ import annotations

import json
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx

from flantune import partitioning as pt
from tests.partitioning import tiny_models as tm


def _flat(tree: Any) -> dict[str, Any]:
    return {jax.tree_util.keystr(path, simple=True, separator="/"): leaf
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _shard_shapes(arrays: Any) -> dict[str, list[int]]:
    """Each array's per-device shard shape (asserting every device holds the same shape)."""
    shapes = {}
    for path, array in _flat(arrays).items():
        per_device = {tuple(shard.data.shape) for shard in array.addressable_shards}
        assert len(per_device) == 1, (path, per_device)
        assert len(array.addressable_shards) == 8, path
        shapes[path] = list(per_device.pop())
    return shapes


def _max_diff(a: Any, b: Any) -> float:
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def shard_shapes_and_forwards() -> tuple[dict, dict, dict]:
    shards: dict = {}
    diffs: dict = {}
    logits_specs: dict = {}
    for name in tm.MODELS:
        graphdef, state = nnx.split(tm.abstract_model(name), nnx.Param)
        params = tm.host_params(name)
        batch = tm.inputs(name)
        reference = tm.apply(graphdef, state, params, batch)
        for mesh_name, sizes in tm.MESHES.items():
            mesh = pt.make_mesh(pt.MeshConfig(**sizes))
            for preset in pt.RULE_PRESETS:
                rules = pt.axis_rules(preset)
                shardings = pt.param_shardings(state, mesh, rules)
                placed = jax.device_put(params, shardings)
                shards.setdefault(name, {}).setdefault(mesh_name, {})[preset] = (
                    _shard_shapes(placed))
                if preset != tm.PRESET_FOR_MESH[mesh_name]:
                    continue
                global_batch = pt.global_batch(batch, mesh)
                batch_shardings = {k: pt.batch_sharding(mesh, v.ndim) for k, v in batch.items()}
                with pt.activation_rules(rules, mesh):
                    forward = jax.jit(lambda p, b, g=graphdef, s=state: tm.apply(g, s, p, b),
                                      in_shardings=(shardings, batch_shardings))
                    logits = forward(placed, global_batch)
                diffs.setdefault(name, {})[mesh_name] = _max_diff(logits, reference)
                logits_specs.setdefault(name, {})[mesh_name] = str(logits.sharding.spec)
    return shards, diffs, logits_specs


def _specs(shardings: Any, wanted: tuple[str, ...]) -> dict[str, str]:
    return {path: str(sharding.spec) for path, sharding in _flat(shardings).items()
            if any(path.endswith(w) for w in wanted)}


OPT_LEAVES = ("mlp/wi_0/kernel", "token_embedder/embedding", "encoder/final_norm/scale",
              "relpos_bias/embedding")


def optimizer_states() -> dict:
    """Specs of optimizer-state leaves and the error of a sharded update vs an unsharded one."""
    graphdef, state = nnx.split(tm.abstract_model("t5"), nnx.Param)
    params = tm.host_params("t5")
    grads = jax.tree.map(lambda p: np.cos(p) * 0.1, params)
    optimizers = {"adamw": optax.adamw(1e-2),
                  "adafactor": optax.adafactor(1e-2, min_dim_size_to_factor=4)}
    results: dict = {}
    for mesh_name in ("fsdp8", "data4_model2"):
        mesh = pt.make_mesh(pt.MeshConfig(**tm.MESHES[mesh_name]))
        shardings = pt.param_shardings(state, mesh, pt.axis_rules(tm.PRESET_FOR_MESH[mesh_name]))
        placed = jax.device_put(params, shardings)
        for opt_name, tx in optimizers.items():
            shapes = jax.eval_shape(tx.init, params)
            exact = pt.opt_state_shardings(shapes, shardings, mesh, param_shapes=params)
            inferred = pt.opt_state_shardings(shapes, shardings, mesh)
            opt_state = jax.jit(tx.init, out_shardings=exact)(placed)
            update = jax.jit(tx.update, in_shardings=(shardings, exact, shardings),
                             out_shardings=(shardings, exact))
            updates, new_state = update(jax.device_put(grads, shardings), opt_state, placed)
            ref_updates, ref_state = tx.update(grads, tx.init(params), params)
            results.setdefault(mesh_name, {})[opt_name] = {
                "exact": _specs(exact, OPT_LEAVES),
                "inferred": _specs(inferred, OPT_LEAVES),
                "update_max_abs_diff": _max_diff(updates, ref_updates),
                "state_max_abs_diff": _max_diff(new_state, ref_state),
                "state_shardings_kept": all(
                    leaf.sharding == sharding for leaf, sharding in
                    zip(jax.tree.leaves(new_state), jax.tree.leaves(exact), strict=True)),
            }
    return results


def batches() -> dict:
    """Which global rows each device holds after assembling a batch, and bad-size errors."""
    results: dict = {}
    rows = np.arange(8 * 3, dtype=np.int32).reshape(8, 3)
    for mesh_name, sizes in tm.MESHES.items():
        mesh = pt.make_mesh(pt.MeshConfig(**sizes))
        array = pt.global_batch({"x": rows, "y": rows[:, 0]}, mesh)["x"]
        results[mesh_name] = {
            "shape": list(array.shape),
            "spec": str(array.sharding.spec),
            "device_rows": {str(shard.device.id): np.asarray(shard.data)[:, 0].tolist()
                            for shard in array.addressable_shards},
            "equal": bool(np.array_equal(np.asarray(array), rows)),
        }
    mesh = pt.make_mesh(pt.MeshConfig(data=4, model=2))
    errors = {}
    for label, call in {"check_batch_size": lambda: pt.check_batch_size(6, mesh),
                        "global_batch": lambda: pt.global_batch({"x": rows[:6]}, mesh),
                        "ragged": lambda: pt.global_batch({"x": rows, "y": rows[:4]}, mesh),
                        "bad_mesh": lambda: pt.make_mesh(pt.MeshConfig(data=3, model=2))}.items():
        try:
            call()
            errors[label] = None
        except pt.PartitioningError as err:
            errors[label] = f"{type(err).__name__}: {err}"
    results["errors"] = errors
    return results


def main() -> None:
    assert jax.device_count() == 8, jax.device_count()
    shards, diffs, logits_specs = shard_shapes_and_forwards()
    print(json.dumps({"shards": shards, "forward_max_abs_diff": diffs,
                      "logits_specs": logits_specs, "optimizers": optimizer_states(),
                      "batches": batches()}))


if __name__ == "__main__":
    main()
