"""A checkpoint of another architecture with the same shapes is refused, naming the fields."""

from __future__ import annotations

import dataclasses

import jax
import pytest

from flantune.models import DecoderConfig, T5Config
from flantune.models.convert import save_params
from flantune.models.convert.checkpoint import save_hf_checkpoint
from flantune.train.architecture_check import architecture_differences
from flantune.train.checkpoints import CheckpointError, load_initial_params
from flantune.train.state import ModelSpec
from tests.train.test_checkpoints import random_params

T5 = T5Config(vocab_size=64, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32,
              num_encoder_layers=1, num_decoder_layers=1)
LLAMA = DecoderConfig(vocab_size=64, emb_dim=16, num_heads=2, num_kv_heads=1, head_dim=8,
                      mlp_dim=32, num_layers=1, max_position_embeddings=64)


def _abstract(config):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                        ModelSpec.from_config(config).abstract_params())


def test_runtime_fields_may_differ_computation_fields_may_not():
    assert architecture_differences(T5, dataclasses.replace(
        T5, dropout_rate=0.1, dtype="bfloat16", remat=True, attention_kernel="xla")) == []
    assert architecture_differences(T5, dataclasses.replace(
        T5, mlp_activation="relu", layer_norm_epsilon=1e-5)) == [
        "mlp_activation: checkpoint 'gelu_tanh', run 'relu'",
        "layer_norm_epsilon: checkpoint 1e-06, run 1e-05"]
    assert architecture_differences(T5, LLAMA) == [
        "model class: checkpoint T5Config, run DecoderConfig"]


def test_a_parameter_checkpoint_of_another_activation_is_refused(tmp_path):
    save_params(T5, random_params(T5), tmp_path / "params")
    other = dataclasses.replace(T5, mlp_activation="relu")
    with pytest.raises(CheckpointError, match=r"\(its config\.json\): mlp_activation: "
                                              r"checkpoint 'gelu_tanh', run 'relu'"):
        load_initial_params(tmp_path / "params", _abstract(other), model=other)
    loaded = load_initial_params(tmp_path / "params", _abstract(T5),
                                 model=dataclasses.replace(T5, dropout_rate=0.1))
    assert jax.tree.structure(loaded) == jax.tree.structure(_abstract(T5))


def test_a_hugging_face_checkpoint_with_another_rope_base_is_refused(tmp_path):
    save_hf_checkpoint(LLAMA, random_params(LLAMA), tmp_path / "hf")
    other = dataclasses.replace(LLAMA, rope_theta=500000.0)
    with pytest.raises(CheckpointError, match=r"rope_theta: checkpoint 10000.0, run 500000.0"):
        load_initial_params(tmp_path / "hf", _abstract(other), role="CHECKPOINT_PATH",
                            model=other)
    load_initial_params(tmp_path / "hf", _abstract(LLAMA), model=LLAMA)
