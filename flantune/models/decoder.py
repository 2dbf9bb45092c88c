"""Decoder-only Llama / Mistral family: RMSNorm, RoPE, SwiGLU, grouped-query attention, optional
sliding window, tied or untied output; causal or PrefixLM masks with packed segments."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from flantune.models import masks
from flantune.models.cache import cache_slots, first_layer
from flantune.models.config import DecoderConfig
from flantune.models.dropout import dropout, resolve_dropout_key, split_key
from flantune.models.layers import (
    HEAD_MAJOR_AXES,
    Attention,
    Dense,
    Embed,
    KeyValue,
    LayerStack,
    Mlp,
    RMSNorm,
    add_prefix_to_cache,
    cached_prefix,
    constrain,
    prefix_key_values,
    soft_prompt,
)
from flantune.models.positions import apply_rotary, rope_inverse_frequencies, rotary_tables

EMBED_AXES = ("batch", "length", "embed")


def _dtypes(config: DecoderConfig) -> dict:
    return {"dtype": jnp.dtype(config.dtype), "param_dtype": jnp.dtype(config.param_dtype)}


def _norm(config: DecoderConfig, rngs: nnx.Rngs) -> RMSNorm:
    return RMSNorm(config.emb_dim, epsilon=config.rms_norm_epsilon, rngs=rngs, **_dtypes(config))


class DecoderOnlyLayer(nnx.Module):
    """Pre-norm self-attention with RoPE, then a gated MLP."""

    def __init__(self, config: DecoderConfig, *, rngs: nnx.Rngs):
        self.attention_norm = _norm(config, rngs)
        self.attention = Attention(config.emb_dim, config.num_heads, config.num_kv_heads,
                                   config.head_dim, scale_logits=True,
                                   dropout_rate=config.dropout_rate,
                                   kernel=config.attention_kernel, rngs=rngs, **_dtypes(config))
        self.mlp_norm = _norm(config, rngs)
        self.mlp = Mlp(config.emb_dim, config.mlp_dim, activation=config.mlp_activation,
                       gated=True, dropout_rate=config.dropout_rate, rngs=rngs, **_dtypes(config))
        self.dropout_rate = config.dropout_rate

    def __call__(self, x: jax.Array, bias: jax.Array, cos: jax.Array, sin: jax.Array, *,
                 dropout_key: jax.Array | None = None,
                 prefix: KeyValue | None = None) -> jax.Array:
        keys = split_key(dropout_key, 4)

        def rotary(q: jax.Array, k: jax.Array) -> tuple[jax.Array, jax.Array]:
            return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)

        h = self.attention_norm(x)
        h = self.attention(h, h, bias, rotary=rotary, dropout_key=keys[0], prefix=prefix)
        x = x + dropout(h, self.dropout_rate, keys[1])
        h = self.mlp(self.mlp_norm(x), dropout_key=keys[2])
        x = x + dropout(h, self.dropout_rate, keys[3])
        return constrain(x, EMBED_AXES)

    def decode_step(self, x: jax.Array, cache: dict[str, jax.Array], bias: jax.Array,
                    cos: jax.Array, sin: jax.Array, index: jax.Array
                    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """`__call__` (deterministic) for positions at cache slots index.. onwards; their
        rotated keys and values are written into the cache."""
        def rotary(q: jax.Array, k: jax.Array) -> tuple[jax.Array, jax.Array]:
            return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)

        h, (key, value) = self.attention.attend_cached(
            self.attention_norm(x), (cache["key"], cache["value"]), index, bias, rotary=rotary,
            prefix=cached_prefix(cache))
        x = x + h
        x = x + self.mlp(self.mlp_norm(x))
        return constrain(x, EMBED_AXES), {**cache, "key": key, "value": value}


class DecoderOnly(nnx.Module):
    """Llama / Mistral taking SeqIO's decoder-only (and PrefixLM) feature names."""

    def __init__(self, config: DecoderConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.token_embedder = Embed(config.vocab_size, config.emb_dim, init_stddev=0.02,
                                    rngs=rngs, **_dtypes(config))
        self.layers = LayerStack(lambda r: DecoderOnlyLayer(config, rngs=r), config.num_layers,
                                 scan=config.scan_layers, remat=config.remat, rngs=rngs)
        self.final_norm = _norm(config, rngs)
        if not config.tie_word_embeddings:
            self.logits_dense = Dense(config.emb_dim, config.vocab_size, ("embed", "vocab"),
                                      rngs=rngs, **_dtypes(config))

    def __call__(self, decoder_input_tokens: jax.Array, *,
                 decoder_segment_ids: jax.Array | None = None,
                 decoder_positions: jax.Array | None = None,
                 decoder_causal_attention: jax.Array | None = None,
                 deterministic: bool = True,
                 dropout_rng: jax.Array | None = None) -> jax.Array:
        """Logits [b, length, vocab] (float32). `dropout_rng` is required when not
        deterministic and dropout_rate > 0."""
        config = self.config
        batch, length = decoder_input_tokens.shape
        mask = masks.decoder_only_mask(length, segment_ids=decoder_segment_ids,
                                       causal_attention=decoder_causal_attention,
                                       sliding_window=config.sliding_window)
        if decoder_positions is None:
            decoder_positions = jnp.broadcast_to(jnp.arange(length)[None], (batch, length))
        prefix = self._prefix()
        per_layer = None
        if prefix is not None:
            # As peft: every position attends to the prefix, which holds positions 0..n-1, so
            # the tokens' positions start at n (the prefix keys themselves are not rotated).
            num_prefix = prefix[0].shape[2]
            mask = masks.with_prefix_columns(mask, num_prefix, batch)
            decoder_positions = decoder_positions + num_prefix
            per_layer = tuple(a[:, None] for a in prefix)
        bias = masks.mask_to_bias(mask)
        inv_freq = rope_inverse_frequencies(config.head_dim, config.rope_theta,
                                            config.rope_scaling)
        cos, sin = rotary_tables(decoder_positions, inv_freq)
        keys = split_key(resolve_dropout_key(config.dropout_rate, deterministic, dropout_rng), 2)
        x = self.token_embedder(decoder_input_tokens)
        x = constrain(dropout(x, config.dropout_rate, keys[0]), EMBED_AXES)
        x = self.layers(x, bias, cos, sin, dropout_key=keys[1], per_layer=per_layer)
        head_key = None if keys[0] is None else jax.random.fold_in(keys[0], 1)
        return self._logits(self.final_norm(x), head_key)

    def _logits(self, x: jax.Array, dropout_key: jax.Array | None = None) -> jax.Array:
        """Final normed states -> float32 logits [b, length, vocab] (`dropout_key` only
        reaches an adapter on the output head)."""
        if self.config.tie_word_embeddings:
            logits = self.token_embedder.attend(x)
        else:
            logits = self.logits_dense(x, dropout_key)
        return constrain(logits.astype(jnp.float32), ("batch", "length", "vocab"))

    def init_decode_cache(self, batch_size: int, max_length: int,
                          first_slot: jax.Array | None = None) -> dict:
        """An empty cache for `max_length` positions per row. `first_slot` [b] (default 0) is
        each row's first real slot: a left-padded prompt's row starts after its padding, and its
        token at slot s has position s - first_slot. Layers are a tuple, or stacked on a leading
        axis with `scan_layers`."""
        cache = self._empty_cache(batch_size, max_length, first_slot)
        prefix = self._prefix()
        if prefix is not None:
            cache["layers"] = add_prefix_to_cache(cache["layers"], prefix, batch_size)
        return cache

    def _empty_cache(self, batch_size: int, max_length: int,
                     first_slot: jax.Array | None = None) -> dict:
        config = self.config
        shape = (batch_size, config.num_kv_heads, max_length, config.head_dim)

        def layer_cache(_: DecoderOnlyLayer) -> dict[str, jax.Array]:
            empty = constrain(jnp.zeros(shape, jnp.dtype(config.dtype)), HEAD_MAJOR_AXES)
            return {"key": empty, "value": empty}

        if first_slot is None:
            first_slot = jnp.zeros((batch_size,), jnp.int32)
        return {"layers": self.layers.map_layers(layer_cache),
                "first_slot": jnp.asarray(first_slot, jnp.int32)}

    def _prefix(self) -> KeyValue | None:
        """Keys and values [layers, kv_heads, n, head_dim] every position attends to first:
        prefix tuning's, or a soft prompt's (prompt tuning), which attends only to itself and
        so has the same keys and values at every layer for every example."""
        prompt = soft_prompt(self)
        if prompt is None:
            return prefix_key_values(self)
        cache = self._empty_cache(1, prompt.shape[0])
        _, cache = self._decode_embedded(constrain(prompt[None], EMBED_AXES), cache, 0)
        layers = cache["layers"]
        if isinstance(layers, tuple):
            return (jnp.stack([layer["key"][0] for layer in layers]),
                    jnp.stack([layer["value"][0] for layer in layers]))
        return layers["key"][:, 0], layers["value"][:, 0]

    def decode_step(self, decoder_input_tokens: jax.Array, cache: dict,
                    index: jax.Array, prefix_length: int | None = None
                    ) -> tuple[jax.Array, dict]:
        """Logits [b, q, vocab] of tokens [b, q] at cache slots index..index+q-1 (a whole
        left-padded prompt at index 0, then one token per step), attending causally to every
        earlier real slot within the sliding window; returns them and the updated cache.
        With `prefix_length`, slots before it also attend to each other bidirectionally (the
        PrefixLM mask `decoder_causal_attention` gives the prompt in training)."""
        x = constrain(self.token_embedder(decoder_input_tokens), EMBED_AXES)
        x, cache = self._decode_embedded(x, cache, index, prefix_length)
        return self._logits(self.final_norm(x)), cache

    def _decode_embedded(self, x: jax.Array, cache: dict, index: jax.Array,
                         prefix_length: int | None = None) -> tuple[jax.Array, dict]:
        """`decode_step` from embeddings [b, q, embed] to the last layer's states."""
        config = self.config
        num_slots = cache_slots(cache)
        first_slot = cache["first_slot"]
        query_slots = jnp.asarray(index, jnp.int32) + jnp.arange(x.shape[1], dtype=jnp.int32)
        key_slots = jnp.arange(num_slots, dtype=jnp.int32)
        allowed = key_slots[None, :] <= query_slots[:, None]
        if prefix_length is not None:
            allowed = allowed | ((key_slots[None, :] < prefix_length)
                                 & (query_slots[:, None] < prefix_length))
        mask = allowed[None] & (key_slots[None, None, :] >= first_slot[:, None, None])
        if config.sliding_window is not None:
            mask = mask & ((query_slots[:, None] - key_slots[None, :])
                           < config.sliding_window)[None]
        mask = mask[:, None]
        positions = jnp.maximum(query_slots[None, :] - first_slot[:, None], 0)
        prefix = cached_prefix(first_layer(cache["layers"]))
        if prefix is not None:  # as in __call__
            num_prefix = prefix[0].shape[-2]
            mask = masks.with_prefix_columns(mask, num_prefix, mask.shape[0])
            positions = positions + num_prefix
        bias = masks.mask_to_bias(mask)
        inv_freq = rope_inverse_frequencies(config.head_dim, config.rope_theta,
                                            config.rope_scaling)
        cos, sin = rotary_tables(positions, inv_freq)
        x, layers = self.layers.apply_cached(x, cache["layers"], bias, cos, sin, index)
        return x, {**cache, "layers": layers}
