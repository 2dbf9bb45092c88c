"""Parameter, optimizer-state and batch shardings on 8 simulated CPU devices.

Everything runs once in a subprocess started with 8 devices (`eight_devices.py`); the tests check
its JSON report against hand-computed shard shapes and specs and unsharded references.
"""

from __future__ import annotations

import pytest

from flantune.testing import run_python
from tests.partitioning import tiny_models as tm

pytestmark = pytest.mark.slow

TOL = 1e-5


@pytest.fixture(scope="module")
def report() -> dict:
    code = "from tests.partitioning.eight_devices import main; main()"
    return run_python(code, devices_per_process=8, timeout=900)[0]


# Per-device shard shapes under the preset each mesh is meant for (hand-computed).
T5_SHARDS = {
    "data4_model2": {  # vocab / mlp / heads over model=2; embed over fsdp=1 (dropped)
        "token_embedder/embedding": [32, 16], "logits_dense/kernel": [16, 32],
        "encoder/layers/layers/mlp/wi_0/kernel": [2, 16, 16],
        "encoder/layers/layers/mlp/wo/kernel": [2, 16, 16],
        "decoder/layers/layers/cross_attention/query": [2, 16, 1, 8],
        "decoder/layers/layers/self_attention/out": [2, 1, 8, 16],
        "encoder/relpos_bias/embedding": [32, 1], "encoder/final_norm/scale": [16],
        "decoder/layers/layers/mlp_norm/scale": [2, 16],
    },
    "fsdp8": {  # embed=16 over fsdp=8; relpos heads=2 does not divide 8: replicated
        "token_embedder/embedding": [64, 2], "logits_dense/kernel": [2, 64],
        "encoder/layers/layers/mlp/wi_0/kernel": [2, 2, 32],
        "encoder/layers/layers/mlp/wo/kernel": [2, 32, 2],
        "decoder/layers/layers/cross_attention/query": [2, 2, 2, 8],
        "decoder/layers/layers/self_attention/out": [2, 2, 8, 2],
        "encoder/relpos_bias/embedding": [32, 2], "encoder/final_norm/scale": [2],
        "decoder/layers/layers/mlp_norm/scale": [2, 2],
    },
}
DECODER_SHARDS = {
    "data4_model2": {  # the single KV head does not divide model=2: replicated
        "token_embedder/embedding": [32, 12], "logits_dense/kernel": [12, 32],
        "layers/layers/0/mlp/wi_0/kernel": [12, 24], "layers/layers/1/mlp/wo/kernel": [24, 12],
        "layers/layers/0/attention/query": [12, 2, 6], "layers/layers/0/attention/key": [12, 1, 6],
        "layers/layers/1/attention/out": [2, 6, 12], "final_norm/scale": [12],
    },
    "fsdp8": {  # embed=12 does not divide 8: mlp, then vocab take fsdp; attention replicated
        "token_embedder/embedding": [8, 12], "logits_dense/kernel": [12, 8],
        "layers/layers/0/mlp/wi_0/kernel": [12, 6], "layers/layers/1/mlp/wo/kernel": [6, 12],
        "layers/layers/0/attention/query": [12, 4, 6], "layers/layers/0/attention/key": [12, 1, 6],
        "layers/layers/1/attention/out": [4, 6, 12], "final_norm/scale": [12],
    },
}


@pytest.mark.parametrize("model, expected", [("t5", T5_SHARDS), ("decoder", DECODER_SHARDS)])
@pytest.mark.parametrize("mesh", ["data4_model2", "fsdp8"])
def test_per_device_shard_shapes(report, model, expected, mesh):
    measured = report["shards"][model][mesh][tm.PRESET_FOR_MESH[mesh]]
    assert {path: measured[path] for path in expected[mesh]} == expected[mesh]


@pytest.mark.parametrize("model", ["t5", "decoder"])
def test_data_parallel_keeps_whole_parameters_on_every_mesh(report, model):
    shards = report["shards"][model]
    full = shards["data8"]["data_parallel"]
    for mesh in tm.MESHES:
        assert shards[mesh]["data_parallel"] == full
    # ... and the 2-D rules on a mesh without `model` or `fsdp` devices shard nothing either.
    assert shards["data8"]["model_parallel_2d"] == full
    assert shards["data8"]["fsdp"] == full


@pytest.mark.parametrize("model", ["t5", "decoder"])
@pytest.mark.parametrize("mesh", list(tm.MESHES))
def test_sharded_forward_matches_unsharded(report, model, mesh):
    assert report["forward_max_abs_diff"][model][mesh] <= TOL


def test_logits_are_sharded_by_activation_rules(report):
    specs = report["logits_specs"]["t5"]
    assert specs["data4_model2"] == "P('data', None, 'model')"
    assert specs["fsdp8"] == "P('fsdp',)"


def test_adamw_moments_follow_their_parameters(report):
    specs = report["optimizers"]["fsdp8"]["adamw"]["exact"]
    assert specs["0/mu/encoder/layers/layers/mlp/wi_0/kernel"] == "P(None, 'fsdp', None)"
    assert specs["0/nu/token_embedder/embedding"] == "P(None, 'fsdp')"
    assert specs["0/mu/encoder/final_norm/scale"] == "P('fsdp',)"
    two_d = report["optimizers"]["data4_model2"]["adamw"]["exact"]
    assert two_d["0/nu/encoder/layers/layers/mlp/wi_0/kernel"] == "P(None, None, 'model')"
    assert two_d["0/mu/encoder/relpos_bias/embedding"] == "P(None, 'model')"


def test_adafactor_factored_statistics_drop_the_reduced_dimension(report):
    # wi_0 [layers=2, embed=16, mlp=32]: optax factors the two largest dims; v_row drops mlp,
    # v_col drops embed. The embedding [vocab=64, embed=16]: v_row drops vocab, v_col embed.
    fsdp = report["optimizers"]["fsdp8"]["adafactor"]["exact"]
    assert fsdp["0/v_row/encoder/layers/layers/mlp/wi_0/kernel"] == "P(None, 'fsdp')"
    assert fsdp["0/v_col/encoder/layers/layers/mlp/wi_0/kernel"] == "P(None, None)"
    assert fsdp["0/v_row/token_embedder/embedding"] == "P('fsdp',)"
    assert fsdp["0/v_col/token_embedder/embedding"] == "P(None,)"
    assert fsdp["0/v/encoder/final_norm/scale"] == "P('fsdp',)"  # unfactored: full shape
    assert fsdp["0/v/encoder/layers/layers/mlp/wi_0/kernel"] == "P()"  # placeholder
    two_d = report["optimizers"]["data4_model2"]["adafactor"]["exact"]
    assert two_d["0/v_row/encoder/layers/layers/mlp/wi_0/kernel"] == "P(None, None)"
    assert two_d["0/v_col/encoder/layers/layers/mlp/wi_0/kernel"] == "P(None, 'model')"
    assert two_d["0/v_row/token_embedder/embedding"] == "P(None,)"
    assert two_d["0/v_col/token_embedder/embedding"] == "P('model',)"


def _canonical(spec: str) -> list[str]:
    """A spec's entries without trailing Nones ("P(None,)" and "P()" both replicate)."""
    entries = [entry.strip() for entry in spec[2:-1].split(",") if entry.strip()]
    while entries and entries[-1] == "None":
        entries.pop()
    return entries


def test_without_param_shapes_the_specs_match_where_unambiguous(report):
    for mesh in ("fsdp8", "data4_model2"):
        adamw = report["optimizers"][mesh]["adamw"]
        assert adamw["inferred"] == adamw["exact"]
        adafactor = report["optimizers"][mesh]["adafactor"]
        for path, spec in adafactor["exact"].items():
            if "/v_row/" not in path and "/v_col/" not in path:
                assert _canonical(adafactor["inferred"][path]) == _canonical(spec), path


@pytest.mark.parametrize("mesh", ["fsdp8", "data4_model2"])
@pytest.mark.parametrize("optimizer", ["adamw", "adafactor"])
def test_sharded_optimizer_update_matches_unsharded(report, mesh, optimizer):
    result = report["optimizers"][mesh][optimizer]
    assert result["update_max_abs_diff"] <= TOL
    assert result["state_max_abs_diff"] <= TOL
    assert result["state_shardings_kept"]


@pytest.mark.parametrize("mesh", list(tm.MESHES))
def test_global_batch_puts_consecutive_rows_on_consecutive_batch_shards(report, mesh):
    batch = report["batches"][mesh]
    assert batch["shape"] == [8, 3] and batch["equal"]
    rows = {int(device): first_columns for device, first_columns in batch["device_rows"].items()}
    if mesh == "data4_model2":  # each pair of model devices holds the same 2 rows
        assert rows == {d: [6 * (d // 2), 6 * (d // 2) + 3] for d in range(8)}
    else:
        assert rows == {d: [3 * d] for d in range(8)}


def test_bad_batch_and_mesh_sizes_give_clear_errors(report):
    errors = report["batches"]["errors"]
    assert errors["check_batch_size"].startswith(
        "BatchSizeError: global batch size 6 is not divisible by the data-parallel size 4")
    assert "local batch of 6 rows on process 0" in errors["global_batch"]
    assert "different numbers of rows: {'x': 8, 'y': 4}" in errors["ragged"]
    assert errors["bad_mesh"].startswith("MeshShapeError: mesh replica=1 x data=3")
    assert "needs 6 devices but 8 are available" in errors["bad_mesh"]
