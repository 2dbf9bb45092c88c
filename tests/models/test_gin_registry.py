"""Every gin model file parses, builds its configuration and has the published parameter count;
the tiny ones instantiate and run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flantune.models import DecoderConfig, T5Config, build_model
from flantune.models.gin_registry import parse_model_config
from tests.models.jit_forward import forward

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "gin_configs" / "models"

# Parameter counts of the published checkpoints (Hugging Face model cards / num_parameters()).
PUBLISHED = {
    "t5_1_0_small": 60_506_624,
    "t5_1_0_base": 222_903_552,
    "t5_1_0_large": 737_668_096,
    "t5_1_1_small": 76_961_152,
    "t5_1_1_base": 247_577_856,
    "t5_1_1_large": 783_150_080,
    "t5_1_1_xl": 2_849_757_184,
    "t5_1_1_xxl": 11_135_332_352,
    "llama_1b": 1_235_814_400,
    "llama_7b": 6_738_415_616,
    "mistral_7b": 7_241_732_096,
}
FLAN_T5 = ("small", "base", "large", "xl", "xxl")


def _load(name: str):
    with gin.unlock_config():
        gin.clear_config()
    gin.add_config_file_search_path(str(ROOT))
    try:
        return parse_model_config(str(MODELS / f"{name}.gin"))
    finally:
        gin.clear_config()


def test_every_file_is_covered():
    names = {p.stem for p in MODELS.glob("*.gin")}
    tiny = {n for n in names if n.endswith("_tiny")}
    assert names - tiny == set(PUBLISHED) | {f"flan_t5_{size}" for size in FLAN_T5}
    assert {"flan_t5_tiny", "t5_1_1_tiny", "llama_tiny", "mistral_tiny"} <= tiny


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_shapes_have_published_parameter_counts(name):
    # Scanned layers: same parameters, one traced layer per stack (fast to trace).
    config = dataclasses.replace(_load(name), scan_layers=True)
    abstract = nnx.eval_shape(lambda: build_model(config))
    count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
    assert count == PUBLISHED[name]


@pytest.mark.parametrize("size", FLAN_T5)
def test_flan_t5_is_the_t5_1_1_architecture(size):
    assert _load(f"flan_t5_{size}") == _load(f"t5_1_1_{size}")


@pytest.mark.parametrize("name", ["flan_t5_tiny", "t5_1_1_tiny", "llama_tiny", "mistral_tiny"])
def test_tiny_models_instantiate_and_run(name):
    config = _load(name)
    model = build_model(config, nnx.Rngs(0))
    tokens = jnp.ones((2, 8), jnp.int32)
    if isinstance(config, T5Config):
        logits = forward(model, tokens, tokens)
    else:
        assert isinstance(config, DecoderConfig)
        logits = forward(model, tokens)
    assert logits.shape == (2, 8, config.vocab_size)
    assert np.isfinite(logits).all()


def test_gin_built_config_equals_python_built_one():
    config = _load("mistral_tiny")
    assert type(config) is DecoderConfig
    assert config == DecoderConfig(family="mistral", vocab_size=128, emb_dim=32, num_heads=4,
                                   num_kv_heads=2, head_dim=8, mlp_dim=64, num_layers=2,
                                   rms_norm_epsilon=1e-5, max_position_embeddings=512,
                                   sliding_window=16)
    # Gin bindings never leak into configurations built in plain Python.
    assert T5Config().emb_dim == 512
