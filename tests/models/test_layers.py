"""Shared layers: logical axis annotations, sharding under a mesh, RMSNorm, attention core."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flantune.models import DecoderConfig, T5Config, build_model
from flantune.models.layers import RMSNorm, dot_product_attention
from tests.models.jit_forward import forward

LOGICAL = {"vocab", "embed", "mlp", "heads", "kv", "relpos_buckets", "layers"}
T5_TINY = T5Config(vocab_size=64, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=24,
                   num_encoder_layers=2, num_decoder_layers=2)
LLAMA_TINY = DecoderConfig(vocab_size=64, emb_dim=16, num_heads=4, num_kv_heads=2, head_dim=4,
                           mlp_dim=24, num_layers=2)


@pytest.mark.parametrize("config", [T5_TINY, LLAMA_TINY], ids=["t5", "llama"])
@pytest.mark.parametrize("scan", [False, True])
def test_every_parameter_has_logical_axis_names(config, scan):
    model = nnx.eval_shape(lambda: build_model(dataclasses.replace(config, scan_layers=scan)))
    params = nnx.state(model, nnx.Param)
    leaves = jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nnx.Variable))
    assert leaves
    for var in leaves:
        names = var.get_metadata()["out_sharding"]
        assert len(names) == var.value.ndim
        assert set(names) <= LOGICAL
    if scan:
        assert any(v.get_metadata()["out_sharding"][0] == "layers" for v in leaves)


def test_forward_under_a_mesh_with_logical_rules_matches_plain_forward():
    model = build_model(LLAMA_TINY, nnx.Rngs(0))
    tokens = jnp.asarray(np.random.default_rng(0).integers(1, 64, (2, 8)))
    plain = forward(model, tokens)
    mesh = jax.make_mesh((1, 1), ("data", "model"),
                         axis_types=(jax.sharding.AxisType.Auto,) * 2)
    rules = (("batch", "data"), ("vocab", "model"), ("mlp", "model"), ("heads", "model"),
             ("embed", None), ("length", None), ("kv", None), ("layers", None))
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        specs = nnx.get_partition_spec(nnx.state(model, nnx.Param))
        assert specs["token_embedder"]["embedding"].value == jax.sharding.PartitionSpec(
            "model", None)
        sharded = forward(model, tokens)
    np.testing.assert_allclose(sharded, plain, atol=1e-6)


def test_rms_norm_matches_formula():
    norm = RMSNorm(6, epsilon=1e-6, dtype=jnp.float32, param_dtype=jnp.float32,
                   rngs=nnx.Rngs(0))
    norm.scale.set_value(jnp.arange(1.0, 7.0))
    x = np.random.default_rng(0).normal(size=(3, 6)).astype(np.float32)
    expected = x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-6) * np.arange(1.0, 7.0)
    np.testing.assert_allclose(np.asarray(norm(jnp.asarray(x))), expected, rtol=1e-5)


def test_attention_core_matches_explicit_softmax():
    rng = np.random.default_rng(1)
    q = rng.normal(size=(1, 4, 3, 2)).astype(np.float32)  # [b, heads, q, d]
    k = rng.normal(size=(1, 2, 5, 2)).astype(np.float32)  # [b, kv_heads, k, d]
    v = rng.normal(size=(1, 2, 5, 2)).astype(np.float32)
    bias = np.zeros((1, 1, 3, 5), np.float32)
    bias[..., 4] = -1e30
    got = np.asarray(dot_product_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v),
                                           jnp.asarray(bias), scale=0.5))
    for head in range(4):
        kv = head // 2
        logits = 0.5 * q[0, head] @ k[0, kv].T + bias[0, 0]
        weights = np.exp(logits - logits.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        np.testing.assert_allclose(got[0, head], weights @ v[0, kv], rtol=1e-5, atol=1e-6)


def test_scanned_rematerialized_gradients_equal_plain_gradients():
    """Training path: scan over layers + remat gives the same loss gradients as a plain loop."""
    plain = build_model(LLAMA_TINY, nnx.Rngs(0))
    params = nnx.state(plain, nnx.Param).to_pure_dict()
    layer_list = [params["layers"]["layers"][i] for i in range(LLAMA_TINY.num_layers)]
    stacked = {**params, "layers": {"layers": jax.tree.map(lambda *xs: jnp.stack(xs),
                                                           *layer_list)}}
    scanned = build_model(dataclasses.replace(LLAMA_TINY, scan_layers=True, remat=True),
                          params=stacked)
    tokens = jnp.asarray(np.random.default_rng(0).integers(1, 64, (2, 8)))

    @nnx.jit
    def grads(model):
        def loss(m):
            logits = m(tokens)
            return -jnp.mean(jax.nn.log_softmax(logits)[..., 0])
        return nnx.grad(loss)(model)

    plain_grads = grads(plain).to_pure_dict()
    scanned_grads = grads(scanned).to_pure_dict()
    for i in range(LLAMA_TINY.num_layers):
        jax.tree.map(lambda a, b, i=i: np.testing.assert_allclose(b[i], a, rtol=1e-5,
                                                                    atol=1e-5),
                     plain_grads["layers"]["layers"][i], scanned_grads["layers"]["layers"])
    np.testing.assert_allclose(scanned_grads["token_embedder"]["embedding"],
                               plain_grads["token_embedder"]["embedding"], rtol=1e-5, atol=1e-5)
