"""Prefix tuning (Li & Liang 2021) as Hugging Face peft computes it: trainable keys and values
that every self-attention query of the adapted stack attends to before the sequence's own.

peft's parameters are one table [n, layers * 2 * kv_heads * head_dim] (its
`prompt_embeddings`), optionally produced during training by an MLP (embedding [n, token_dim]
-> Linear -> tanh -> Linear, peft's `prefix_projection`) that is folded away on export. Row t
holds, per layer l, the key (slot 2l) and the value (slot 2l + 1) of virtual token t.

- Llama / Mistral: every layer's self-attention, with the key/value heads; the tokens' RoPE
  positions start at n and the prefix keys are not rotated.
- T5: the decoder's self-attention only (peft leaves the encoder and the cross-attention
  alone), with peft's layout: the table has one entry per *encoder* layer (peft's
  num_layers), heads of width emb_dim / num_heads, and decoder layer i reads entry 2i mod L
  (the entries of odd index are never read). The relative position bias treats the prefix as
  positions 0..n-1 and the decoder tokens as n.. . `PrefixConfig.t5_encoder` adds prefixes to
  the encoder's self-attention too (flantune's extension, bidirectional bias, the same
  positions; no peft export).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flantune.models.config import DecoderConfig, ModelConfig, T5Config
from flantune.models.layers import ENCODER_PREFIX_ATTRIBUTE, PREFIX_ATTRIBUTE
from flantune.peft.config import PrefixConfig
from flantune.peft.lora import AdapterParam, kaiming_uniform_bound


@dataclasses.dataclass(frozen=True)
class PrefixLayout:
    """How peft's table maps onto a model: `layers` table entries of `heads` x `head_dim`,
    and the entry each layer of the adapted stack reads."""

    layers: int
    heads: int
    head_dim: int
    layer_map: tuple[int, ...]

    @property
    def token_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def width(self) -> int:
        return self.layers * 2 * self.token_dim


def prefix_layout(config: ModelConfig) -> PrefixLayout:
    """peft's table layout for `config`, or a ValueError where peft's layout cannot describe
    the model."""
    if isinstance(config, DecoderConfig):
        return PrefixLayout(config.num_layers, config.num_kv_heads, config.head_dim,
                            tuple(range(config.num_layers)))
    if not isinstance(config, T5Config):
        raise TypeError(f"unknown model configuration {type(config).__name__}")
    if config.num_heads * config.head_dim != config.emb_dim:
        raise ValueError(
            f"prefix tuning of T5 follows peft, whose prefix heads are emb_dim / num_heads wide "
            f"({config.emb_dim} / {config.num_heads}), but this model's heads are "
            f"{config.head_dim} wide; peft cannot describe it.")
    if config.num_decoder_layers != config.num_encoder_layers:
        raise ValueError(
            f"prefix tuning of T5 follows peft, whose table has one entry per encoder layer "
            f"({config.num_encoder_layers}) read by the decoder's {config.num_decoder_layers} "
            "layers; it needs as many decoder as encoder layers.")
    layers = config.num_encoder_layers
    return PrefixLayout(layers, config.num_heads, config.head_dim,
                        tuple((2 * i) % layers for i in range(config.num_decoder_layers)))


class PrefixTuning(nnx.Module):
    """Produces the prefix keys and values [stack layers, heads, n, head_dim] of every layer
    the adapted stack has (flantune.models.layers.PREFIX_ATTRIBUTE)."""

    def __init__(self, config: PrefixConfig, layout: PrefixLayout, *, dtype: jnp.dtype,
                 param_dtype: jnp.dtype, key: jax.Array):
        n = config.num_virtual_tokens
        keys = jax.random.split(key, 5)
        self.layout = layout
        self.dtype = dtype

        def param(value: jax.Array) -> AdapterParam:
            return AdapterParam(value, out_sharding=(None,) * value.ndim, eager_sharding=False)

        if not config.projection:
            # peft: torch's nn.Embedding default, N(0, 1).
            self.embedding = param(jax.random.normal(keys[0], (n, layout.width), param_dtype))
            self.mlp = None
            return
        hidden = config.projection_hidden or layout.token_dim
        self.embedding = param(jax.random.normal(keys[0], (n, layout.token_dim), param_dtype))

        def linear(k1: jax.Array, k2: jax.Array, fan_in: int, fan_out: int):
            # torch's nn.Linear default: weight and bias U(-1/sqrt(in), 1/sqrt(in)).
            bound = kaiming_uniform_bound(fan_in)
            return (param(jax.random.uniform(k1, (fan_in, fan_out), param_dtype, -bound, bound)),
                    param(jax.random.uniform(k2, (fan_out,), param_dtype, -bound, bound)))

        w1, b1 = linear(keys[1], keys[2], layout.token_dim, hidden)
        w2, b2 = linear(keys[3], keys[4], hidden, layout.width)
        self.mlp = nnx.Dict(w1=w1, b1=b1, w2=w2, b2=b2)

    def table(self) -> jax.Array:
        """peft's table [n, layers * 2 * token_dim] (through the MLP when there is one)."""
        embedding = self.embedding.get_value().astype(self.dtype)
        if self.mlp is None:
            return embedding
        mlp = {name: value.get_value().astype(self.dtype) for name, value in self.mlp.items()}
        hidden = jnp.tanh(embedding @ mlp["w1"] + mlp["b1"])
        return hidden @ mlp["w2"] + mlp["b2"]

    def __call__(self) -> tuple[jax.Array, jax.Array]:
        layout = self.layout
        table = self.table()
        n = table.shape[0]
        kv = table.reshape(n, layout.layers, 2, layout.heads, layout.head_dim)
        kv = kv.transpose(1, 2, 3, 0, 4)[jnp.asarray(layout.layer_map)]
        return kv[:, 0], kv[:, 1]


def attach_prefix(model: nnx.Module, model_config: ModelConfig, config: PrefixConfig,
                  key: jax.Array) -> PrefixTuning:
    try:
        layout = prefix_layout(model_config)
    except ValueError as err:
        raise ValueError(f"PrefixConfig: {err}") from None
    dtypes = {"dtype": jnp.dtype(model_config.dtype),
              "param_dtype": jnp.dtype(model_config.param_dtype)}
    module = PrefixTuning(config, layout, key=key, **dtypes)
    setattr(model, PREFIX_ATTRIBUTE, module)
    if config.t5_encoder:
        if not isinstance(model_config, T5Config):
            raise ValueError("PrefixConfig.t5_encoder=True prefixes a T5 encoder; this model "
                             "has none.")
        layers = model_config.num_encoder_layers
        encoder = PrefixLayout(layers, model_config.num_heads, model_config.head_dim,
                               tuple(range(layers)))
        setattr(model, ENCODER_PREFIX_ATTRIBUTE,
                PrefixTuning(config, encoder, key=jax.random.fold_in(key, 1), **dtypes))
    return module


def folded_table(adapter: dict, config: PrefixConfig) -> np.ndarray:
    """peft's `prompt_embeddings` (float32) of an adapter's parameters: the table, or the MLP's
    output for it (peft saves the folded form)."""
    params = adapter[PREFIX_ATTRIBUTE]
    embedding = np.asarray(params["embedding"], np.float32)
    if not config.projection:
        return embedding
    mlp = {name: np.asarray(value, np.float32) for name, value in params["mlp"].items()}
    return np.tanh(embedding @ mlp["w1"] + mlp["b1"]) @ mlp["w2"] + mlp["b2"]
