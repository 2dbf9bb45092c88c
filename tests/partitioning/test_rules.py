"""Logical axis rules: presets cover the models' names, priority, fallbacks and errors."""

from __future__ import annotations

import flax.linen as nn
import gin
import jax
import pytest
from flax import nnx
from jax.sharding import AbstractMesh, PartitionSpec

from flantune.partitioning import (
    LOGICAL_AXES,
    MESH_AXES,
    RULE_PRESETS,
    AxisRulesError,
    axis_rules,
    logical_to_mesh,
)
from tests.partitioning import tiny_models as tm

MESH_4x2 = AbstractMesh((1, 4, 1, 2), MESH_AXES)
MESH_FSDP8 = AbstractMesh((1, 1, 8, 1), MESH_AXES)
MESH_2x2x2 = AbstractMesh((2, 2, 2, 1), MESH_AXES)


def _logical_names_used(name: str, monkeypatch) -> set[str]:
    """Every logical name a model gives its parameters and activations (forward traced)."""
    model = tm.abstract_model(name)
    names = {axis for _, variable in nnx.to_flat_state(nnx.state(model, nnx.Param))
             for axis in variable.get_metadata()["out_sharding"]}
    seen: list[tuple] = []

    def record(x, axes, *args, **kwargs):
        seen.append(tuple(axes))
        return x

    monkeypatch.setattr(nn, "with_logical_constraint", record)
    graphdef, state = nnx.split(model)
    jax.eval_shape(lambda st, batch: nnx.merge(graphdef, st)(**batch), state, tm.inputs(name))
    assert seen, "the model constrains no activation"
    return names | {axis for axes in seen for axis in axes if axis is not None}


@pytest.mark.parametrize("model", ["t5", "decoder"])
def test_every_logical_name_of_the_models_has_a_rule_in_every_preset(model, monkeypatch):
    used = _logical_names_used(model, monkeypatch)
    assert {"batch", "length", "vocab", "embed", "mlp", "heads", "kv"} <= used
    assert used <= set(LOGICAL_AXES), used - set(LOGICAL_AXES)
    for preset, rules in RULE_PRESETS.items():
        assert set(LOGICAL_AXES) <= {name for name, _ in rules}, preset


@pytest.mark.parametrize("preset, axes, expected", [
    ("data_parallel", ("batch", "length", "embed"), PartitionSpec("data", None, None)),
    ("data_parallel", ("vocab", "embed"), PartitionSpec(None, None)),
    ("fsdp", ("embed", "mlp"), PartitionSpec(None, None)),
    ("model_parallel_2d", ("embed", "mlp"), PartitionSpec(None, "model")),
    ("model_parallel_2d", ("layers", "embed", "heads", "kv"),
     PartitionSpec(None, None, "model", None)),
    ("model_parallel_2d", ("batch", "length", "vocab"), PartitionSpec("data", None, "model")),
])
def test_specs_on_data4_model2(preset, axes, expected):
    assert logical_to_mesh(axes, axis_rules(preset), MESH_4x2) == expected


def test_fsdp_shards_embed_and_keeps_activations_batch_sharded():
    rules = axis_rules("fsdp")
    assert logical_to_mesh(("vocab", "embed"), rules, MESH_FSDP8) == PartitionSpec(None, "fsdp")
    assert logical_to_mesh(("mlp", "embed"), rules, MESH_FSDP8) == PartitionSpec(None, "fsdp")
    # `batch` takes fsdp first, so the activation's embed dimension stays whole.
    assert logical_to_mesh(("batch", "length", "embed"), rules, MESH_FSDP8) == PartitionSpec(
        "fsdp", None, None)


def test_batch_spans_all_batch_axes_and_each_mesh_axis_is_used_once():
    rules = axis_rules("model_parallel_2d")
    spec = logical_to_mesh(("batch", "length", "embed"), rules, MESH_2x2x2)
    assert spec == PartitionSpec(("replica", "data", "fsdp"), None, None)
    assert logical_to_mesh(("embed", "mlp"), rules, MESH_2x2x2) == PartitionSpec("fsdp", None)


def test_indivisible_dimension_falls_back_to_next_rule_then_replicated():
    rules = axis_rules("fsdp")
    # embed=12 does not divide 8: the mlp rule applies instead.
    assert logical_to_mesh(("embed", "mlp"), rules, MESH_FSDP8, (12, 48)) == PartitionSpec(
        None, "fsdp")
    # Nothing divides: replicated.
    assert logical_to_mesh(("embed", "heads", "kv"), rules, MESH_FSDP8, (12, 4, 6)) == (
        PartitionSpec(None, None, None))
    # Without a shape the rule applies as in Flax.
    assert logical_to_mesh(("embed", "mlp"), rules, MESH_FSDP8) == PartitionSpec("fsdp", None)


def test_matches_flax_rule_semantics_without_size_one_axes():
    mesh = AbstractMesh((2, 2, 2, 2), MESH_AXES)
    for rules in RULE_PRESETS.values():
        for axes in [("batch", "length", "embed"), ("embed", "mlp"), ("vocab", "embed"),
                     ("layers", "heads", "kv", "embed"), ("batch", "length", "heads", "kv")]:
            flax_spec = nn.logical_to_mesh_axes(axes, rules)
            assert logical_to_mesh(axes, rules, mesh) == flax_spec, (axes, rules)


def test_overrides_replace_all_rules_for_a_name_in_place():
    rules = axis_rules("fsdp", overrides=[("embed", None), ["vocab", ["model"]], ("extra", None)])
    names = [name for name, _ in rules]
    assert names.count("embed") == 1 and names.count("vocab") == 1
    assert dict(rules)["embed"] is None and dict(rules)["vocab"] == ("model",)
    assert names.index("embed") == [n for n, _ in RULE_PRESETS["fsdp"]].index("embed")
    assert names[-1] == "extra"


@pytest.mark.parametrize("call, message", [
    (lambda: axis_rules("zero3"), r"unknown partitioning preset 'zero3'; choose one of"),
    (lambda: axis_rules(overrides=[("embed", "tensor")]), r"names mesh axes \['tensor'\]"),
    (lambda: axis_rules(overrides=[("embed",)]), r"must be a \(logical name, mesh axes\) pair"),
    (lambda: logical_to_mesh(("embed", "experts"), axis_rules(), MESH_4x2),
     r"logical axes \['experts'\].*have no rule"),
    (lambda: logical_to_mesh(("embed", "embed"), axis_rules(), MESH_4x2), r"repeat \['embed'\]"),
    (lambda: logical_to_mesh(("embed",), axis_rules(), MESH_4x2, (4, 4)), r"differ in rank"),
])
def test_bad_rules_give_clear_errors(call, message):
    with pytest.raises(AxisRulesError, match=message):
        call()


def test_axis_rules_are_gin_configurable():
    gin.clear_config()
    try:
        gin.parse_config(["flantune.axis_rules.preset = 'model_parallel_2d'",
                          "flantune.axis_rules.overrides = [('kv', 'model')]"])
        rules = axis_rules()
        assert dict(rules)["heads"] == "model" and dict(rules)["kv"] == "model"
    finally:
        gin.clear_config()
