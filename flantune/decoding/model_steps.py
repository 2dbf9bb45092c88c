"""The two calls every search needs, for both model families: start (encode or prefill the
prompt, returning the logits of the first new token and the cache) and step (feed one token)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flantune.decoding.errors import DecodeBatchError
from flantune.decoding.prompts import check_left_padded
from flantune.models.cache import Cache
from flantune.models.decoder import DecoderOnly
from flantune.models.t5 import EncoderDecoder

FEATURES = {EncoderDecoder: "encoder_input_tokens", DecoderOnly: "decoder_input_tokens"}

# T5's decoder starts from token 0 (its pad id) at position 0.
T5_DECODER_START = 0


def input_feature(model: nnx.Module) -> str:
    """The SeqIO feature a model decodes from."""
    for cls, feature in FEATURES.items():
        if isinstance(model, cls):
            return feature
    raise TypeError(f"cannot decode with {type(model).__name__}; expected EncoderDecoder or "
                    "DecoderOnly.")


def check_batch(model: nnx.Module, batch: Mapping[str, np.ndarray | jax.Array],
                pad_id: int) -> None:
    """Host-side checks of the batch's decoding feature; raises DecodeBatchError."""
    feature = input_feature(model)
    if feature not in batch:
        raise DecodeBatchError(f"batch has features {sorted(batch)} but {type(model).__name__} "
                               f"decodes from {feature!r}.")
    tokens = np.asarray(batch[feature])
    if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer):
        raise DecodeBatchError(f"batch[{feature!r}] must be integer [batch, length]; got "
                               f"{tokens.dtype} {tokens.shape}.")
    if feature == "decoder_input_tokens":
        check_left_padded(tokens, pad_id)


def start(model: nnx.Module, inputs: jax.Array, max_decode_length: int,
          pad_id: int, bos_id: int | None = None, prefix_lm: bool = False
          ) -> tuple[jax.Array, Cache, int]:
    """Logits [b, vocab] of the first new token, the cache, and the cache slot the first new
    token will occupy (new token i goes to that slot + i). Decoder-only prompts get `bos_id`
    (if not None) before their first token and, with `prefix_lm`, attend to themselves
    bidirectionally."""
    if isinstance(model, EncoderDecoder):
        encoded = model.encode(inputs)
        cache = model.init_decode_cache(encoded, inputs, max_decode_length + 1)
        bos = jnp.full((inputs.shape[0], 1), T5_DECODER_START, jnp.int32)
        logits, cache = model.decode_step(bos, cache, jnp.int32(0))
        return logits[:, -1], cache, 1
    batch, prompt_length = inputs.shape
    first_slot = prompt_length - jnp.sum(inputs != pad_id, axis=1, dtype=jnp.int32)
    if bos_id is not None:  # one more column; BOS goes in the slot before each prompt
        inputs = jnp.pad(inputs, ((0, 0), (1, 0)), constant_values=pad_id)
        inputs = inputs.at[jnp.arange(batch), first_slot].set(bos_id)
        prompt_length += 1
    cache = model.init_decode_cache(batch, prompt_length + max_decode_length, first_slot)
    logits, cache = model.decode_step(inputs, cache, jnp.int32(0),
                                      prefix_length=prompt_length if prefix_lm else None)
    return logits[:, -1], cache, prompt_length


def stepper(model: nnx.Module) -> Callable[[jax.Array, Cache, jax.Array],
                                           tuple[jax.Array, Cache]]:
    """`step(tokens [b], cache, slot) -> (logits [b, vocab], cache)` feeding one token per row
    at cache `slot`, usable inside `jax.lax` loops: the model is rebuilt from its split state at
    the loop's trace level (NNX transforms such as the scanned layer stack refuse modules built
    at an outer one)."""
    graphdef, state = nnx.split(model)

    def step(tokens: jax.Array, cache: Cache, slot: jax.Array) -> tuple[jax.Array, Cache]:
        # tree.map rebuilds the Variables at this trace level; merge alone would reuse them.
        model_here = nnx.merge(graphdef, jax.tree.map(lambda a: a, state))
        logits, cache = model_here.decode_step(tokens[:, None], cache, slot)
        return logits[:, -1], cache

    return step
