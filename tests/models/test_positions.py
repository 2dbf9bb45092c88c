"""T5 relative position buckets and RoPE frequencies against Hugging Face's implementations."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flantune.models.config import RopeScaling
from flantune.models.positions import (
    RelativePositionBias,
    apply_rotary,
    relative_position_bucket,
    rope_inverse_frequencies,
    rotary_tables,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from transformers.models.t5.modeling_t5 import T5Attention  # noqa: E402


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (8, 24), (64, 256)])
def test_relative_position_bucket_matches_transformers(bidirectional, num_buckets, max_distance):
    relative = np.arange(-600, 601)
    expected = T5Attention._relative_position_bucket(
        torch.tensor(relative), bidirectional=bidirectional, num_buckets=num_buckets,
        max_distance=max_distance).numpy()
    got = relative_position_bucket(relative, bidirectional=bidirectional,
                                   num_buckets=num_buckets, max_distance=max_distance)
    np.testing.assert_array_equal(got, expected)


def test_relative_position_bias_uses_given_positions():
    """With positions restarting at 0 the bias equals the bias of the unpacked sequence."""
    bias = RelativePositionBias(8, 24, 2, bidirectional=True, param_dtype=jnp.float32,
                                rngs=nnx.Rngs(0))
    whole = np.asarray(bias(None, None, 5, 5))
    positions = jnp.asarray([[0, 1, 2, 0, 1, 2, 3, 4]])
    packed = np.asarray(bias(positions, positions, 8, 8))
    np.testing.assert_array_equal(packed[0, :, 3:, 3:], whole[0])
    np.testing.assert_array_equal(packed[0, :, :3, :3], whole[0, :, :3, :3])


def _hf_inv_freq(rope_parameters: dict, head_dim: int = 16) -> np.ndarray:
    config = transformers.LlamaConfig(hidden_size=4 * head_dim, num_attention_heads=4,
                                      head_dim=head_dim, max_position_embeddings=64,
                                      rope_parameters=rope_parameters)
    rope_type = rope_parameters["rope_type"]
    if rope_type == "default":
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
        inv_freq, _ = LlamaRotaryEmbedding.compute_default_rope_parameters(config)
    else:
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
        inv_freq, _ = ROPE_INIT_FUNCTIONS[rope_type](config, None)
    return inv_freq.numpy()


def test_rope_frequencies_match_transformers():
    np.testing.assert_allclose(
        rope_inverse_frequencies(16, 5000.0),
        _hf_inv_freq({"rope_type": "default", "rope_theta": 5000.0}), rtol=1e-6)
    scaling = RopeScaling(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                          original_max_position_embeddings=32)
    np.testing.assert_allclose(
        rope_inverse_frequencies(16, 500000.0, scaling),
        _hf_inv_freq({"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                      "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 32}), rtol=1e-6)


def test_rotary_preserves_norm_and_depends_only_on_relative_offset():
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.normal(size=(1, 1, 1, 16)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(1, 1, 1, 16)), jnp.float32)
    inv_freq = rope_inverse_frequencies(16, 10000.0)

    def rotated(x, position):
        cos, sin = rotary_tables(jnp.asarray([[position]]), inv_freq)
        return apply_rotary(x, cos, sin)

    np.testing.assert_allclose(np.linalg.norm(rotated(q, 7)), np.linalg.norm(q), rtol=1e-5)
    a = float(jnp.sum(rotated(q, 9) * rotated(k, 4)))
    b = float(jnp.sum(rotated(q, 105) * rotated(k, 100)))
    assert a == pytest.approx(b, abs=1e-4)
