"""Greedy decoding and sampling: one token per row per step in a `jax.lax.while_loop` that stops
when every row has produced EOS or `max_decode_length` tokens."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from flantune.decoding import model_steps
from flantune.decoding.config import DecodeConfig
from flantune.decoding.logits_processing import choose_tokens


def sample_decode(model: nnx.Module, inputs: jax.Array, config: DecodeConfig,
                  key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Tokens [b, max_decode_length] (pad after EOS) and summed log-probabilities [b]."""
    length = config.max_decode_length
    logits, cache, first_slot = model_steps.start(model, inputs, length, config.pad_id,
                                                     config.bos_id, config.prefix_lm)
    step = model_steps.stepper(model)
    batch = inputs.shape[0]
    init = {
        "i": jnp.int32(0),
        "tokens": jnp.full((batch, length), config.pad_id, jnp.int32),
        "done": jnp.zeros((batch,), bool),
        "scores": jnp.zeros((batch,), jnp.float32),
        "logits": logits,
        "cache": cache,
    }

    def unfinished(state: dict) -> jax.Array:
        return (state["i"] < length) & ~jnp.all(state["done"])

    def advance(state: dict) -> dict:
        i, done = state["i"], state["done"]
        token = choose_tokens(state["logits"], config, jax.random.fold_in(key, i))
        token = jnp.where(done, config.pad_id, token)
        log_probs = jax.nn.log_softmax(state["logits"], axis=-1)
        token_log_prob = jnp.take_along_axis(log_probs, token[:, None], axis=-1)[:, 0]
        logits, cache = step(token, state["cache"], first_slot + i)
        return {
            "i": i + 1,
            "tokens": state["tokens"].at[:, i].set(token),
            "done": done | (token == config.eos_id),
            "scores": state["scores"] + jnp.where(done, 0.0, token_log_prob),
            "logits": logits,
            "cache": cache,
        }

    final = jax.lax.while_loop(unfinished, advance, init)
    return final["tokens"], final["scores"]
