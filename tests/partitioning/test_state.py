"""Parameter and optimizer-state shardings on abstract meshes (no devices needed)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
import pytest
from flax import nnx
from jax.sharding import AbstractMesh, PartitionSpec

from flantune.partitioning import (
    MESH_AXES,
    AxisRulesError,
    axis_rules,
    opt_state_shardings,
    param_shardings,
)
from tests.partitioning import tiny_models as tm

FSDP8 = AbstractMesh((1, 1, 8, 1), MESH_AXES)


def _specs(tree) -> dict[str, PartitionSpec]:
    return {jax.tree_util.keystr(path, simple=True, separator="/"): leaf.spec
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.mark.parametrize("model", ["t5", "decoder"])
def test_param_shardings_mirror_the_pure_dict_of_params(model):
    state = nnx.state(tm.abstract_model(model), nnx.Param)
    shardings = param_shardings(state, FSDP8, axis_rules("fsdp"))
    assert jax.tree.structure(shardings) == jax.tree.structure(state.to_pure_dict())
    assert all(s.mesh == FSDP8 for s in jax.tree.leaves(shardings))
    # The module itself is accepted too.
    from_module = param_shardings(tm.abstract_model(model), FSDP8, axis_rules("fsdp"))
    assert _specs(from_module) == _specs(shardings)


def test_param_specs_follow_logical_axes_and_divisibility():
    specs = _specs(param_shardings(nnx.state(tm.abstract_model("decoder"), nnx.Param), FSDP8,
                                   axis_rules("fsdp")))
    assert specs["token_embedder/embedding"] == PartitionSpec("fsdp", None)  # embed=12 -> vocab
    assert specs["layers/layers/0/mlp/wi_0/kernel"] == PartitionSpec(None, "fsdp")
    assert specs["layers/layers/1/attention/query"] == PartitionSpec(None, None, None)


class _Unannotated(nnx.Module):
    def __init__(self):
        self.weight = nnx.Param(jnp.zeros((4, 4)))


def test_parameter_without_logical_axes_is_an_error():
    with pytest.raises(AxisRulesError, match=r"parameter weight has no logical axis names"):
        param_shardings(_Unannotated(), FSDP8, axis_rules("fsdp"))


def test_optimizer_leaves_are_matched_to_params_by_path_not_shape():
    params = {"a": jax.ShapeDtypeStruct((16, 8), jnp.float32),
              "b": jax.ShapeDtypeStruct((16, 8), jnp.float32)}
    shardings = {"a": jax.sharding.NamedSharding(FSDP8, PartitionSpec("fsdp", None)),
                 "b": jax.sharding.NamedSharding(FSDP8, PartitionSpec(None, "fsdp"))}
    state = {"count": jax.ShapeDtypeStruct((), jnp.int32),
             "ema": dict(params),
             "row": {"a": jax.ShapeDtypeStruct((16,), jnp.float32)},
             "other": jax.ShapeDtypeStruct((16, 8), jnp.float32)}
    specs = _specs(opt_state_shardings(state, shardings, FSDP8, param_shapes=params))
    assert specs == {"count": PartitionSpec(), "ema/a": PartitionSpec("fsdp", None),
                     "ema/b": PartitionSpec(None, "fsdp"), "row/a": PartitionSpec("fsdp"),
                     "other": PartitionSpec()}


def test_adafactor_statistics_on_an_abstract_mesh():
    state = nnx.state(tm.abstract_model("t5"), nnx.Param)
    params = jax.tree.map(lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype), state.to_pure_dict())
    shardings = param_shardings(state, FSDP8, axis_rules("fsdp"))
    shapes = jax.eval_shape(optax.adafactor(1e-2, min_dim_size_to_factor=4).init, params)
    specs = _specs(opt_state_shardings(shapes, shardings, FSDP8, param_shapes=params))
    # logits_dense [embed=16, vocab=64]: v_row drops vocab, v_col drops embed.
    assert specs["0/v_row/logits_dense/kernel"] == PartitionSpec("fsdp")
    assert specs["0/v_col/logits_dense/kernel"] == PartitionSpec(None)
    assert specs["0/count"] == PartitionSpec()
