"""Beam search with the GNMT / t5x length penalty, over the model's cache.

Each step extends every live beam by every token and keeps the 2k best extensions. Those ending
in EOS finish (score = log p / penalty(length)) if they rank among the k best (so, as in Hugging
Face's beam search, one beam equals greedy decoding); the k best others stay alive. At the last
step every kept extension finishes. A row stops early once no live beam can still beat its best
finished one. Written here because no installed library offers a jittable beam search over a
Flax NNX model's cache.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from flantune.decoding import model_steps
from flantune.decoding.config import DecodeConfig
from flantune.models.cache import take_rows


def length_penalty(length: jax.Array, alpha: float) -> jax.Array:
    """GNMT / t5x brevity penalty ((5 + length) / 6) ** alpha."""
    return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** alpha


def _top(scores: jax.Array, k: int, *arrays: jax.Array) -> tuple[jax.Array, ...]:
    """The k best of scores [b, n] and the matching entries of arrays [b, n, ...]."""
    best, index = jax.lax.top_k(scores, k)
    return (best, *(jnp.take_along_axis(a, index.reshape(index.shape + (1,) * (a.ndim - 2)),
                                        axis=1) for a in arrays))


def beam_decode(model: nnx.Module, inputs: jax.Array,
                config: DecodeConfig) -> tuple[jax.Array, jax.Array]:
    """The best finished beam per row [b, max_decode_length] (pad after EOS) and its
    length-penalised score [b]."""
    beams, length, alpha = config.num_beams, config.max_decode_length, config.length_penalty
    logits, cache, first_slot = model_steps.start(model, inputs, length, config.pad_id,
                                                     config.bos_id, config.prefix_lm)
    step = model_steps.stepper(model)
    batch, vocab = logits.shape
    if 2 * beams > beams * vocab:
        raise ValueError(f"num_beams={beams} needs a vocabulary of at least 2 tokens.")
    rows = jnp.repeat(jnp.arange(batch), beams)
    neg_inf = jnp.asarray(-jnp.inf, jnp.float32)
    init = {
        "i": jnp.int32(0),
        # Identical beams at the start: only the first is alive, or all would stay duplicates.
        "live_log_probs": jnp.tile(jnp.where(jnp.arange(beams) == 0, 0.0, neg_inf), (batch, 1)),
        "live_tokens": jnp.full((batch, beams, length), config.pad_id, jnp.int32),
        "finished_scores": jnp.full((batch, beams), neg_inf),
        "finished_tokens": jnp.full((batch, beams, length), config.pad_id, jnp.int32),
        "logits": logits[rows],
        "cache": take_rows(cache, rows),
    }
    max_penalty = jnp.maximum(length_penalty(1, alpha), length_penalty(length, alpha))

    def unfinished(state: dict) -> jax.Array:
        # No live beam can still reach the best finished score: log p only falls as tokens are
        # added, and is divided by at most `max_penalty`.
        best_live = state["live_log_probs"].max(axis=1) / max_penalty
        row_done = state["finished_scores"][:, 0] >= best_live
        return (state["i"] < length) & ~jnp.all(row_done)

    def advance(state: dict) -> dict:
        i = state["i"]
        log_probs = jax.nn.log_softmax(state["logits"], axis=-1).reshape(batch, beams, vocab)
        candidates = (state["live_log_probs"][:, :, None] + log_probs).reshape(batch, -1)
        cand_log_probs, flat = jax.lax.top_k(candidates, 2 * beams)
        parent, token = flat // vocab, (flat % vocab).astype(jnp.int32)
        cand_tokens = jnp.take_along_axis(state["live_tokens"], parent[:, :, None], axis=1)
        cand_tokens = cand_tokens.at[:, :, i].set(token)
        is_eos = token == config.eos_id
        within_k = jnp.arange(2 * beams)[None, :] < beams
        finishing = (is_eos & within_k) | (i + 1 == length)
        cand_finished = jnp.where(finishing, cand_log_probs / length_penalty(i + 1, alpha),
                                  neg_inf)
        finished_scores, finished_tokens = _top(
            jnp.concatenate([state["finished_scores"], cand_finished], axis=1), beams,
            jnp.concatenate([state["finished_tokens"], cand_tokens], axis=1))
        live_log_probs, live_tokens, live_parent, live_token = _top(
            jnp.where(is_eos, neg_inf, cand_log_probs), beams, cand_tokens, parent, token)
        source_rows = (jnp.arange(batch)[:, None] * beams + live_parent).reshape(-1)
        logits, cache = step(live_token.reshape(-1),
                                         take_rows(state["cache"], source_rows), first_slot + i)
        return {
            "i": i + 1,
            "live_log_probs": live_log_probs,
            "live_tokens": live_tokens,
            "finished_scores": finished_scores,
            "finished_tokens": finished_tokens,
            "logits": logits,
            "cache": cache,
        }

    final = jax.lax.while_loop(unfinished, advance, init)
    return final["finished_tokens"][:, 0], final["finished_scores"][:, 0]
