"""Tiny models, meshes and inputs shared by the partitioning tests and their subprocesses."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from flax import nnx

from flantune.models import DecoderConfig, T5Config, build_model

# Scanned layers (a leading `layers` axis); every dimension divides 8 except the 2 heads.
T5_TINY = T5Config(vocab_size=64, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32,
                   num_encoder_layers=2, num_decoder_layers=2, scan_layers=True)
# Unscanned layers (a list); `embed`=12 does not divide 8 and one KV head does not divide 2:
# exercises the fallbacks (the next rule for a name, else replicated).
DECODER_TINY = DecoderConfig(vocab_size=64, emb_dim=12, num_heads=4, num_kv_heads=1, head_dim=6,
                             mlp_dim=48, num_layers=2, max_position_embeddings=64)
MODELS = {"t5": T5_TINY, "decoder": DECODER_TINY}

# (mesh sizes as MeshConfig kwargs, the preset that mesh is meant for)
MESHES = {
    "data8": {"data": 8},
    "data4_model2": {"data": 4, "model": 2},
    "fsdp8": {"data": 1, "fsdp": 8},
}
PRESET_FOR_MESH = {"data8": "data_parallel", "data4_model2": "model_parallel_2d",
                   "fsdp8": "fsdp"}
BATCH = 8


def abstract_model(name: str) -> nnx.Module:
    return nnx.eval_shape(lambda: build_model(MODELS[name], nnx.Rngs(0)))


def host_params(name: str) -> dict[str, Any]:
    """Initialised parameters (seed 0) as a nested dict of numpy arrays."""
    model = build_model(MODELS[name], nnx.Rngs(0))
    return jax.tree.map(np.asarray, nnx.state(model, nnx.Param).to_pure_dict())


def inputs(name: str) -> dict[str, np.ndarray]:
    """A padded global batch of BATCH rows for model `name`."""
    rng = np.random.default_rng(7)
    if name == "t5":
        enc = rng.integers(2, 64, (BATCH, 12)).astype(np.int32)
        enc[3, 7:] = 0
        dec = rng.integers(2, 64, (BATCH, 6)).astype(np.int32)
        dec[:, 0] = 0
        return {"encoder_input_tokens": enc, "decoder_input_tokens": dec}
    tokens = rng.integers(2, 64, (BATCH, 10)).astype(np.int32)
    tokens[5, 6:] = 0
    return {"decoder_input_tokens": tokens}


def apply(graphdef: nnx.GraphDef, abstract_state: nnx.State, params: dict[str, Any],
          batch: dict[str, jax.Array]) -> jax.Array:
    """The model's logits for `batch` given params as a nested dict (works under jit)."""
    treedef = jax.tree.structure(abstract_state)
    model = nnx.merge(graphdef, jax.tree.unflatten(treedef, jax.tree.leaves(params)))
    return model(**batch)
