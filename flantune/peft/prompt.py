"""Prompt tuning (Lester et al. 2021) as Hugging Face peft computes it: `n` trainable
embeddings placed before the inputs.

- T5: before the encoder's input embeddings (attended by the encoder and the cross-attention;
  the decoder is unchanged). Needs unpacked batches: a packed row holds several examples, each
  of which would need its own copy in front.
- Llama / Mistral: before the sequence, at positions 0..n-1, the tokens after them; the loss and
  the logits cover the tokens only. The prompt attends only to itself (causal, first), so its
  keys and values at every layer are the same for every example: flantune computes them once
  per step and every example attends to them like a prefix, which keeps packing, the key/value
  cache and left-padded decoding exact.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from flantune.models.config import ModelConfig
from flantune.models.layers import PROMPT_ATTRIBUTE
from flantune.peft.config import PromptConfig
from flantune.peft.lora import AdapterParam


class PromptTuning(nnx.Module):
    """The soft prompt [n, embed] (flantune.models.layers.PROMPT_ATTRIBUTE)."""

    def __init__(self, config: PromptConfig, emb_dim: int, *, dtype: jnp.dtype,
                 param_dtype: jnp.dtype, key: jax.Array):
        value = jax.random.normal(key, (config.num_virtual_tokens, emb_dim), param_dtype)
        self.embedding = AdapterParam(value, out_sharding=(None, "embed"), eager_sharding=False)
        self.dtype = dtype

    def __call__(self) -> jax.Array:
        return self.embedding.get_value().astype(self.dtype)


def attach_prompt(model: nnx.Module, model_config: ModelConfig, config: PromptConfig,
                  key: jax.Array) -> PromptTuning:
    module = PromptTuning(config, model_config.emb_dim, dtype=jnp.dtype(model_config.dtype),
                          param_dtype=jnp.dtype(model_config.param_dtype), key=key)
    setattr(model, PROMPT_ATTRIBUTE, module)
    return module
