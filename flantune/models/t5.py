"""Encoder-decoder T5: v1.0 (ReLU MLP, tied scaled output) and v1.1 / Flan-T5 (gated-GELU MLP,
untied output head). Pre-norm RMSNorm blocks; relative position bias computed in the first layer
of each stack and shared by all layers of that stack."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from flantune.models import masks
from flantune.models.cache import cache_slots, first_layer
from flantune.models.config import T5Config
from flantune.models.dropout import dropout, resolve_dropout_key, split_key
from flantune.models.layers import (
    ENCODER_PREFIX_ATTRIBUTE,
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
    soft_prompt_length,
)
from flantune.models.positions import RelativePositionBias

EMBED_AXES = ("batch", "length", "embed")


def _dtypes(config: T5Config) -> dict:
    return {"dtype": jnp.dtype(config.dtype), "param_dtype": jnp.dtype(config.param_dtype)}


def _norm(config: T5Config, rngs: nnx.Rngs) -> RMSNorm:
    return RMSNorm(config.emb_dim, epsilon=config.layer_norm_epsilon, rngs=rngs, **_dtypes(config))


def _attention(config: T5Config, rngs: nnx.Rngs) -> Attention:
    # T5 folds the 1/sqrt(head_dim) logit scaling into the query initialisation.
    return Attention(config.emb_dim, config.num_heads, config.num_heads, config.head_dim,
                     scale_logits=False, dropout_rate=config.dropout_rate,
                     kernel=config.attention_kernel, rngs=rngs, **_dtypes(config))


def _mlp(config: T5Config, rngs: nnx.Rngs) -> Mlp:
    return Mlp(config.emb_dim, config.mlp_dim, activation=config.mlp_activation,
               gated=config.gated_mlp, dropout_rate=config.dropout_rate, rngs=rngs,
               **_dtypes(config))


class EncoderLayer(nnx.Module):
    """Self-attention then MLP, each pre-normed and residual."""

    def __init__(self, config: T5Config, *, rngs: nnx.Rngs):
        self.attention_norm = _norm(config, rngs)
        self.attention = _attention(config, rngs)
        self.mlp_norm = _norm(config, rngs)
        self.mlp = _mlp(config, rngs)
        self.dropout_rate = config.dropout_rate

    def __call__(self, x: jax.Array, bias: jax.Array, *,
                 dropout_key: jax.Array | None = None,
                 prefix: KeyValue | None = None) -> jax.Array:
        keys = split_key(dropout_key, 4)
        h = self.attention_norm(x)
        h = self.attention(h, h, bias, dropout_key=keys[0], prefix=prefix)
        x = x + dropout(h, self.dropout_rate, keys[1])
        h = self.mlp(self.mlp_norm(x), dropout_key=keys[2])
        x = x + dropout(h, self.dropout_rate, keys[3])
        return constrain(x, EMBED_AXES)


class DecoderLayer(nnx.Module):
    """Causal self-attention, cross-attention to the encoder, then MLP."""

    def __init__(self, config: T5Config, *, rngs: nnx.Rngs):
        self.self_attention_norm = _norm(config, rngs)
        self.self_attention = _attention(config, rngs)
        self.cross_attention_norm = _norm(config, rngs)
        self.cross_attention = _attention(config, rngs)
        self.mlp_norm = _norm(config, rngs)
        self.mlp = _mlp(config, rngs)
        self.dropout_rate = config.dropout_rate

    def __call__(self, x: jax.Array, self_bias: jax.Array, encoded: jax.Array,
                 cross_bias: jax.Array, *, dropout_key: jax.Array | None = None,
                 prefix: KeyValue | None = None) -> jax.Array:
        keys = split_key(dropout_key, 6)
        h = self.self_attention_norm(x)
        h = self.self_attention(h, h, self_bias, dropout_key=keys[0], prefix=prefix)
        x = x + dropout(h, self.dropout_rate, keys[1])
        h = self.cross_attention(self.cross_attention_norm(x), encoded, cross_bias,
                                 dropout_key=keys[2])
        x = x + dropout(h, self.dropout_rate, keys[3])
        h = self.mlp(self.mlp_norm(x), dropout_key=keys[4])
        x = x + dropout(h, self.dropout_rate, keys[5])
        return constrain(x, EMBED_AXES)

    def decode_step(self, x: jax.Array, cache: dict[str, jax.Array], self_bias: jax.Array,
                    cross_bias: jax.Array, index: jax.Array
                    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """`__call__` (deterministic) for decoder positions at cache slots index.. onwards:
        self-attention keys/values go into the cache, cross-attention reads the encoder keys and
        values projected once by `EncoderDecoder.init_decode_cache`."""
        h = self.self_attention_norm(x)
        h, (key, value) = self.self_attention.attend_cached(
            h, (cache["key"], cache["value"]), index, self_bias, prefix=cached_prefix(cache))
        x = x + h
        h = self.cross_attention.attend_precomputed(
            self.cross_attention_norm(x), (cache["cross_key"], cache["cross_value"]), cross_bias)
        x = x + h
        x = x + self.mlp(self.mlp_norm(x))
        return constrain(x, EMBED_AXES), {**cache, "key": key, "value": value}


class Stack(nnx.Module):
    """Relative position bias, the layers and the final norm of the encoder or the decoder."""

    def __init__(self, config: T5Config, *, decoder: bool, rngs: nnx.Rngs):
        self.relpos_bias = RelativePositionBias(
            config.relative_attention_num_buckets, config.relative_attention_max_distance,
            config.num_heads, bidirectional=not decoder, param_dtype=jnp.dtype(config.param_dtype),
            rngs=rngs)
        layer_cls = DecoderLayer if decoder else EncoderLayer
        num_layers = config.num_decoder_layers if decoder else config.num_encoder_layers
        self.layers = LayerStack(lambda r: layer_cls(config, rngs=r), num_layers,
                                 scan=config.scan_layers, remat=config.remat, rngs=rngs)
        self.final_norm = _norm(config, rngs)


class EncoderDecoder(nnx.Module):
    """T5 v1.0 / v1.1 / Flan-T5 taking SeqIO's encoder-decoder feature names."""

    def __init__(self, config: T5Config, *, rngs: nnx.Rngs):
        self.config = config
        self.token_embedder = Embed(config.vocab_size, config.emb_dim, init_stddev=1.0, rngs=rngs,
                                    **_dtypes(config))
        self.encoder = Stack(config, decoder=False, rngs=rngs)
        self.decoder = Stack(config, decoder=True, rngs=rngs)
        if not config.tie_word_embeddings:
            self.logits_dense = Dense(config.emb_dim, config.vocab_size, ("embed", "vocab"),
                                      rngs=rngs, **_dtypes(config))

    def encode(self, encoder_input_tokens: jax.Array, *,
               encoder_segment_ids: jax.Array | None = None,
               encoder_positions: jax.Array | None = None,
               dropout_key: jax.Array | None = None) -> jax.Array:
        """Encoder outputs [b, length, embed] ([b, n + length, embed] with a soft prompt of n
        slots in front: prompt tuning, unpacked rows only)."""
        prompt = soft_prompt(self)
        if prompt is not None and encoder_segment_ids is not None:
            raise ValueError(
                "prompt tuning of T5 needs unpacked batches (each example of a packed row would "
                "need a soft prompt of its own in front); set flantune.train_config.pack = False.")
        x = self.token_embedder(encoder_input_tokens)
        if prompt is not None:
            x = jnp.concatenate([jnp.broadcast_to(prompt[None].astype(x.dtype),
                                                  (x.shape[0], *prompt.shape)), x], axis=1)
        length = x.shape[1]
        if encoder_segment_ids is not None:
            mask = masks.segment_mask(encoder_segment_ids, encoder_segment_ids)
        else:
            valid = self.encoder_valid(encoder_input_tokens)
            mask = masks.padding_mask(valid, valid)
        relpos = self.encoder.relpos_bias(encoder_positions, encoder_positions, length, length)
        prefix = prefix_key_values(self, ENCODER_PREFIX_ATTRIBUTE)
        per_layer = None
        if prefix is not None:
            relpos, mask = self._with_prefix(self.encoder, prefix, relpos, mask,
                                             encoder_positions, length, x.shape[0])
            per_layer = tuple(a[:, None] for a in prefix)
        # Two bias terms, summed inside attention: the position bias is shared by the batch
        # when positions are implicit, the mask by the heads.
        bias = (relpos, masks.mask_to_bias(mask))
        keys = split_key(dropout_key, 3)
        x = constrain(dropout(x, self.config.dropout_rate, keys[0]), EMBED_AXES)
        x = self.encoder.layers(x, bias, dropout_key=keys[1], per_layer=per_layer)
        x = self.encoder.final_norm(x)
        return dropout(x, self.config.dropout_rate, keys[2])

    def decode(self, encoded: jax.Array, encoder_input_tokens: jax.Array,
               decoder_input_tokens: jax.Array, *,
               encoder_segment_ids: jax.Array | None = None,
               decoder_segment_ids: jax.Array | None = None,
               decoder_positions: jax.Array | None = None,
               dropout_key: jax.Array | None = None) -> jax.Array:
        """Decoder logits [b, length, vocab] (float32) given encoder outputs."""
        length = decoder_input_tokens.shape[1]
        self_mask = masks.causal_mask(length)
        if decoder_segment_ids is not None:
            self_mask = self_mask & masks.segment_mask(decoder_segment_ids, decoder_segment_ids)
        if encoder_segment_ids is not None and decoder_segment_ids is not None:
            cross_mask = masks.segment_mask(decoder_segment_ids, encoder_segment_ids)
        else:
            cross_mask = self.encoder_valid(encoder_input_tokens)[:, None, None, :]
        relpos = self.decoder.relpos_bias(decoder_positions, decoder_positions, length, length)
        prefix = prefix_key_values(self)
        per_layer = None
        if prefix is not None:
            relpos, self_mask = self._with_prefix(self.decoder, prefix, relpos, self_mask,
                                                  decoder_positions, length,
                                                  decoder_input_tokens.shape[0])
            per_layer = tuple(a[:, None] for a in prefix)
        self_bias = (relpos, masks.mask_to_bias(self_mask))
        cross_bias = masks.mask_to_bias(cross_mask)
        keys = split_key(dropout_key, 3)
        x = self.token_embedder(decoder_input_tokens)
        x = constrain(dropout(x, self.config.dropout_rate, keys[0]), EMBED_AXES)
        x = self.decoder.layers(x, self_bias, encoded, cross_bias, dropout_key=keys[1],
                                per_layer=per_layer)
        x = self.decoder.final_norm(x)
        x = dropout(x, self.config.dropout_rate, keys[2])
        return self._logits(x, None if keys[2] is None else jax.random.fold_in(keys[2], 1))

    @staticmethod
    def _with_prefix(stack: Stack, prefix: KeyValue, relpos: jax.Array, mask: jax.Array,
                     positions: jax.Array | None, length: int, batch: int
                     ) -> tuple[jax.Array, jax.Array]:
        """The position bias and mask with prefix columns in front. As peft: every position
        attends to the prefix, as if the prefix held positions 0..n-1 and the tokens n..
        (the stack's own position buckets)."""
        num_prefix = prefix[0].shape[2]
        queries = (jnp.arange(length)[None] if positions is None else positions) + num_prefix
        prefix_relpos = stack.relpos_bias(queries, jnp.arange(num_prefix)[None],
                                          num_prefix + length, num_prefix)
        rows = max(prefix_relpos.shape[0], relpos.shape[0])
        relpos = jnp.concatenate([jnp.broadcast_to(term, (rows, *term.shape[1:]))
                                  for term in (prefix_relpos, relpos)], axis=-1)
        return relpos, masks.with_prefix_columns(mask, num_prefix, batch)

    def _logits(self, x: jax.Array, dropout_key: jax.Array | None = None) -> jax.Array:
        """Final decoder states -> float32 logits [b, length, vocab] (`dropout_key` only
        reaches an adapter on the output head)."""
        if self.config.tie_word_embeddings:
            scale = jnp.asarray(self.config.emb_dim ** -0.5, x.dtype)
            logits = self.token_embedder.attend(x * scale)
        else:
            logits = self.logits_dense(x, dropout_key)
        return constrain(logits.astype(jnp.float32), ("batch", "length", "vocab"))

    def init_decode_cache(self, encoded: jax.Array, encoder_input_tokens: jax.Array,
                          max_length: int) -> dict:
        """The decoding cache: per decoder layer, empty self-attention keys/values for
        `max_length` positions and the cross-attention keys/values of `encoded`, projected once.
        Layers are a tuple, or stacked on a leading axis with `scan_layers`."""
        def layer_cache(layer: DecoderLayer, enc: jax.Array) -> dict[str, jax.Array]:
            cross_key, cross_value = layer.cross_attention.project_key_value(enc)
            b, heads, _, head_dim = cross_key.shape
            empty = constrain(jnp.zeros((b, heads, max_length, head_dim), cross_key.dtype),
                              HEAD_MAJOR_AXES)
            return {"key": empty, "value": empty, "cross_key": cross_key,
                    "cross_value": cross_value}

        layers = self.decoder.layers.map_layers(layer_cache, encoded)
        prefix = prefix_key_values(self)
        if prefix is not None:
            layers = add_prefix_to_cache(layers, prefix, encoded.shape[0])
        return {"layers": layers, "encoder_valid": self.encoder_valid(encoder_input_tokens)}

    def encoder_valid(self, encoder_input_tokens: jax.Array) -> jax.Array:
        """Which encoder outputs are real [b, n + length]: a soft prompt's n slots (if any) and
        the non-padding tokens."""
        valid = encoder_input_tokens > 0
        slots = soft_prompt_length(self)
        if not slots:
            return valid
        return jnp.concatenate([jnp.ones((valid.shape[0], slots), bool), valid], axis=1)

    def decode_step(self, decoder_input_tokens: jax.Array, cache: dict,
                    index: jax.Array) -> tuple[jax.Array, dict]:
        """Logits [b, q, vocab] of decoder tokens [b, q] at positions index..index+q-1, given
        the cache holding every earlier position; returns them and the updated cache. Equals
        `decode` on the whole prefix (deterministic)."""
        num_slots = cache_slots(cache)
        query_positions = jnp.asarray(index, jnp.int32) + jnp.arange(
            decoder_input_tokens.shape[1], dtype=jnp.int32)
        key_positions = jnp.arange(num_slots, dtype=jnp.int32)
        # Positions lie in [0, num_slots), so both lengths are num_slots.
        relpos = self.decoder.relpos_bias(query_positions[None], key_positions[None],
                                          num_slots, num_slots)
        causal = (key_positions[None, :] <= query_positions[:, None])[None, None]
        self_bias = masks.mask_to_bias(causal, relpos)
        prefix = cached_prefix(first_layer(cache["layers"]))
        if prefix is not None:  # as in `decode`
            num_prefix = prefix[0].shape[-2]
            prefix_relpos = self.decoder.relpos_bias(
                query_positions[None] + num_prefix, jnp.arange(num_prefix)[None],
                num_slots + num_prefix, num_prefix)
            self_bias = jnp.concatenate([prefix_relpos, self_bias], axis=-1)
        cross_bias = masks.mask_to_bias(cache["encoder_valid"][:, None, None, :])
        x = constrain(self.token_embedder(decoder_input_tokens), EMBED_AXES)
        x, layers = self.decoder.layers.apply_cached(x, cache["layers"], self_bias, cross_bias,
                                                     index)
        logits = self._logits(self.decoder.final_norm(x))
        return logits, {**cache, "layers": layers}

    def __call__(self, encoder_input_tokens: jax.Array, decoder_input_tokens: jax.Array, *,
                 encoder_segment_ids: jax.Array | None = None,
                 decoder_segment_ids: jax.Array | None = None,
                 encoder_positions: jax.Array | None = None,
                 decoder_positions: jax.Array | None = None,
                 deterministic: bool = True,
                 dropout_rng: jax.Array | None = None) -> jax.Array:
        """Logits [b, decoder length, vocab]. `dropout_rng` is required when not deterministic."""
        enc_key, dec_key = split_key(resolve_dropout_key(self.config.dropout_rate, deterministic,
                                                  dropout_rng), 2)
        encoded = self.encode(encoder_input_tokens, encoder_segment_ids=encoder_segment_ids,
                              encoder_positions=encoder_positions, dropout_key=enc_key)
        return self.decode(encoded, encoder_input_tokens, decoder_input_tokens,
                           encoder_segment_ids=encoder_segment_ids,
                           decoder_segment_ids=decoder_segment_ids,
                           decoder_positions=decoder_positions, dropout_key=dec_key)

