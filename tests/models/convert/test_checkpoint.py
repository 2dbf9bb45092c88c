"""Hugging Face checkpoint import/export: round trips through transformers, sharding, dtypes,
and bad checkpoints rejected before anything is loaded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy
from safetensors import safe_open

from flantune.models import (
    CheckpointError,
    build_model,
    load_hf_checkpoint,
    model_params,
    save_hf_checkpoint,
)
from flantune.models.convert import checkpoint as checkpoint_module
from tests.models import hf_reference as ref
from tests.models.jit_forward import forward

FAMILIES = ["t5_v1_0", "t5_v1_1", "llama", "mistral"]


def _hf_model(family: str):
    if family.startswith("t5"):
        return ref.t5(family[3:], seed=11)
    if family == "mistral":
        return ref.decoder("mistral", seed=11, sliding_window=4)
    return ref.decoder("llama", seed=11)


def _inputs(family: str):
    rng = np.random.default_rng(4)
    tokens = rng.integers(2, ref.VOCAB, (2, 10))
    if family.startswith("t5"):
        dec = rng.integers(2, ref.VOCAB, (2, 6))
        dec[:, 0] = 0
        return tokens, dec
    return (tokens,)


def _hf_logits(model, family: str, inputs) -> np.ndarray:
    if family.startswith("t5"):
        return ref.t5_logits(model, *inputs)
    return ref.decoder_logits(model, inputs[0], np.ones_like(inputs[0]))


def _read_all(directory: Path) -> dict[str, np.ndarray]:
    tensors = {}
    for file in sorted(directory.glob("*.safetensors")):
        with safe_open(str(file), framework="numpy") as handle:
            tensors.update({name: handle.get_tensor(name) for name in handle.keys()})
    return tensors


@pytest.fixture(scope="module")
def hf_checkpoints(tmp_path_factory):
    out = {}
    for family in FAMILIES:
        model = _hf_model(family)
        out[family] = (model, ref.save(model, tmp_path_factory.mktemp(family)))
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_export_loads_in_transformers_with_identical_logits(family, hf_checkpoints, tmp_path):
    hf_model, directory = hf_checkpoints[family]
    config, params = load_hf_checkpoint(directory)
    inputs = _inputs(family)
    ours = forward(build_model(config, params=params), *map(jnp.asarray, inputs))
    expected = _hf_logits(hf_model, family, inputs)
    np.testing.assert_allclose(ours, expected, atol=1e-5, rtol=0)

    files = save_hf_checkpoint(config, params, tmp_path, max_shard_size=40_000)
    assert len(files) > 1 and (tmp_path / "model.safetensors.index.json").exists()
    reloaded = type(hf_model).from_pretrained(str(tmp_path)).eval()
    np.testing.assert_array_equal(_hf_logits(reloaded, family, inputs), expected)
    # Every tensor written is bit-identical to the one transformers wrote.
    original = _read_all(directory)
    exported = _read_all(tmp_path)
    for name, value in exported.items():
        np.testing.assert_array_equal(value, original[name], err_msg=name)


def test_t5_v1_1_with_a_tied_unscaled_head_converts(tmp_path):
    """transformers 5 writes a v1.1 T5 whose lm_head is the shared embedding (no v1.0 output
    scaling) with tie_word_embeddings=true, scale_decoder_outputs=false and no lm_head.weight."""
    hf_config = ref.transformers.T5Config(
        vocab_size=ref.VOCAB, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, feed_forward_proj="gated-gelu", dropout_rate=0.0,
        tie_word_embeddings=True, scale_decoder_outputs=False)
    ref.torch.manual_seed(5)
    hf_model = ref.transformers.T5ForConditionalGeneration(hf_config).eval()
    ref._randomize(hf_model, 5, scale=0.7)
    directory = ref.save(hf_model, tmp_path / "hf")
    assert "lm_head.weight" not in _read_all(directory)
    config, params = load_hf_checkpoint(directory)
    assert not config.tie_word_embeddings
    np.testing.assert_array_equal(params["logits_dense"]["kernel"],
                                  params["token_embedder"]["embedding"].T)
    inputs = _inputs("t5_v1_1")
    ours = forward(build_model(config, params=params), *map(jnp.asarray, inputs))
    np.testing.assert_allclose(ours, ref.t5_logits(hf_model, *inputs), atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_scanned_params_round_trip(family, hf_checkpoints, tmp_path):
    _, directory = hf_checkpoints[family]
    config, params = load_hf_checkpoint(directory, scan_layers=True)
    assert config.scan_layers
    save_hf_checkpoint(config, params, tmp_path)
    again_config, again = load_hf_checkpoint(tmp_path, scan_layers=True)
    assert again_config == config
    jax.tree.map(np.testing.assert_array_equal, params, again)


def test_sharded_index_is_consistent(hf_checkpoints, tmp_path):
    _, directory = hf_checkpoints["llama"]
    config, params = load_hf_checkpoint(directory)
    limit = 20_000
    save_hf_checkpoint(config, params, tmp_path, max_shard_size=limit)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(tmp_path.glob("model-*-of-*.safetensors"))
    assert sorted(set(index["weight_map"].values())) == [s.name for s in shards]
    total = 0
    for shard in shards:
        tensors = safetensors.numpy.load_file(str(shard))
        size = sum(t.nbytes for t in tensors.values())
        assert size <= limit or len(tensors) == 1
        assert all(index["weight_map"][name] == shard.name for name in tensors)
        total += size
    assert index["metadata"]["total_size"] == total
    # Writing again as a single file removes the stale shards and index.
    save_hf_checkpoint(config, params, tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == ["model.safetensors"]
    assert not (tmp_path / "model.safetensors.index.json").exists()


def test_bfloat16_checkpoint_loads_into_float32(hf_checkpoints, tmp_path):
    _, directory = hf_checkpoints["t5_v1_1"]
    config, params = load_hf_checkpoint(directory)
    save_hf_checkpoint(config, params, tmp_path, dtype="bfloat16")
    with safe_open(str(tmp_path / "model.safetensors"), framework="numpy") as handle:
        assert handle.get_slice("shared.weight").get_dtype() == "BF16"
    _, loaded = load_hf_checkpoint(tmp_path)
    rounded = jax.tree.map(lambda a: np.asarray(a).astype(ml_dtypes.bfloat16).astype(np.float32),
                           params)
    assert jax.tree.leaves(loaded)[0].dtype == jnp.float32
    jax.tree.map(np.testing.assert_array_equal, loaded, rounded)


def _rewrite(source: Path, target: Path, edit) -> Path:
    """Copies a single-file checkpoint to `target` with its tensors passed through `edit`."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(source / "config.json", target / "config.json")
    tensors = safetensors.numpy.load_file(str(source / "model.safetensors"))
    safetensors.numpy.save_file(edit(tensors), str(target / "model.safetensors"))
    return target


def never_reads_data(monkeypatch) -> None:
    """Fails the test if tensor data is read: validation must reject first."""
    def fail(*args, **kwargs):
        raise AssertionError("tensor data was read before the checkpoint was validated")
    monkeypatch.setattr(checkpoint_module, "read_tensors", fail)


@pytest.fixture(name="never_reads_data")
def never_reads_data_fixture(monkeypatch) -> None:
    never_reads_data(monkeypatch)


def test_missing_tensor_is_named(hf_checkpoints, tmp_path, never_reads_data):
    _, directory = hf_checkpoints["llama"]
    name = "model.layers.1.mlp.up_proj.weight"
    bad = _rewrite(directory, tmp_path, lambda t: {k: v for k, v in t.items() if k != name})
    with pytest.raises(CheckpointError, match=rf"missing tensor '{name}' \(expected shape "
                                              r"\(48, 32\)\)"):
        load_hf_checkpoint(bad)


def test_extra_tensor_is_named(hf_checkpoints, tmp_path, never_reads_data):
    _, directory = hf_checkpoints["t5_v1_1"]
    extra = {"encoder.block.9.layer.0.layer_norm.weight": np.ones(32, np.float32)}
    bad = _rewrite(directory, tmp_path, lambda t: {**t, **extra})
    with pytest.raises(CheckpointError, match=r"unexpected tensor "
                                              r"'encoder.block.9.layer.0.layer_norm.weight' "
                                              r"\(shape \(32,\)\)"):
        load_hf_checkpoint(bad)


def test_wrong_shape_names_expected_and_found(hf_checkpoints, tmp_path, never_reads_data):
    _, directory = hf_checkpoints["mistral"]
    name = "model.layers.0.self_attn.k_proj.weight"
    bad = _rewrite(directory, tmp_path,
                   lambda t: {**t, name: np.zeros((32, 32), np.float32)})
    with pytest.raises(CheckpointError, match=rf"tensor '{name}': expected shape \(16, 32\), "
                                              r"found \(32, 32\)"):
        load_hf_checkpoint(bad)


def test_unknown_architecture(hf_checkpoints, tmp_path, never_reads_data):
    _, directory = hf_checkpoints["llama"]
    bad = _rewrite(directory, tmp_path, lambda t: t)
    config = json.loads((bad / "config.json").read_text())
    config["architectures"] = ["GPT2LMHeadModel"]
    config["model_type"] = "gpt2"
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="unknown architecture.*GPT2LMHeadModel"):
        load_hf_checkpoint(bad)


def test_index_naming_a_missing_shard(hf_checkpoints, tmp_path, monkeypatch):
    _, directory = hf_checkpoints["llama"]
    config, params = load_hf_checkpoint(directory)
    files = save_hf_checkpoint(config, params, tmp_path, max_shard_size=20_000)
    files[1].unlink()
    never_reads_data(monkeypatch)
    with pytest.raises(CheckpointError, match=f"lists shard {files[1].name}, which does not"):
        load_hf_checkpoint(tmp_path)


def test_save_checks_every_parameter_before_writing(hf_checkpoints, tmp_path):
    _, directory = hf_checkpoints["llama"]
    config, params = load_hf_checkpoint(directory)
    params["layers"]["layers"][1]["mlp"]["wo"]["kernel"] = jnp.zeros((3, 3))
    with pytest.raises(CheckpointError, match=r"layers/layers/1/mlp/wo/kernel: expected shape "
                                              r"\(48, 32\), found \(3, 3\)"):
        save_hf_checkpoint(config, params, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_build_model_rejects_mismatched_params(hf_checkpoints):
    _, directory = hf_checkpoints["t5_v1_0"]
    config, params = load_hf_checkpoint(directory)
    del params["decoder"]["final_norm"]
    with pytest.raises(ValueError, match="missing parameter decoder/final_norm/scale"):
        build_model(config, params=params)


def test_model_params_round_trip_through_build(hf_checkpoints):
    _, directory = hf_checkpoints["mistral"]
    config, params = load_hf_checkpoint(directory)
    again = model_params(build_model(config, params=params))
    jax.tree.map(np.testing.assert_array_equal, params, again)
