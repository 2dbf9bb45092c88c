"""Beam search over the model's cache, with t5x's semantics (the default) or Hugging Face's.

Both keep k live beams; each step extends every live beam by every token, takes the 2k most
probable extensions, and keeps the k best of those that did not end as live beams.

- `beam_semantics="t5x"` (t5x's `decoding.beam_search`): every one of the 2k extensions that
  ends in EOS joins a pool of the k best finished hypotheses, scored `log p / ((5 + n) / 6) **
  alpha` (n generated tokens, EOS included; t5x's decoder-only models also count the prompt).
  A row is done once its pool is full and the pool's worst score beats anything a live beam
  could still reach. A hypothesis cut off at `max_decode_length` does not finish: it is
  returned, with its plain log p, only for a row that finished none.
- `beam_semantics="hf"` (transformers' beam search): an extension ending in EOS finishes only if
  it ranks among the k best of the 2k (so one beam is greedy decoding), and at
  `max_decode_length` the k best extensions finish whatever they end with. Scores are
  `log p / n ** length_penalty`. A row takes no more finished hypotheses once `early_stopping`
  says so: True, once k have finished; False, once k have finished and the best live beam, scored
  at its current length, does not beat the worst of them; "never", the same but scoring the live
  beam at `max_decode_length` when `length_penalty > 0`.

Written here because no installed library offers a jittable beam search over a Flax NNX
model's cache.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from flantune.decoding import model_steps
from flantune.decoding.config import DecodeConfig
from flantune.models.cache import Cache, take_rows

# step(tokens [rows], cache, i) -> (logits [rows, vocab], cache): feeds new token i of each row.
Step = Callable[[jax.Array, Cache, jax.Array], tuple[jax.Array, Cache]]
NEG_INF = float("-inf")


def length_penalty(length: jax.Array, alpha: float) -> jax.Array:
    """GNMT / t5x brevity penalty ((5 + length) / 6) ** alpha."""
    return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** alpha


def _penalty(length: jax.Array | int, config: DecodeConfig) -> jax.Array:
    """What a finished hypothesis of `length` generated tokens divides its log p by."""
    if config.beam_semantics == "t5x":
        return length_penalty(length, config.length_penalty)
    return jnp.asarray(length, jnp.float32) ** config.length_penalty


def _top(scores: jax.Array, k: int, *arrays: jax.Array) -> tuple[jax.Array, ...]:
    """The k best of scores [b, n] (best first) and the matching entries of arrays [b, n, ...]."""
    best, index = jax.lax.top_k(scores, k)
    return (best, *(jnp.take_along_axis(a, index.reshape(index.shape + (1,) * (a.ndim - 2)),
                                        axis=1) for a in arrays))


def beam_decode(model: nnx.Module, inputs: jax.Array,
                config: DecodeConfig) -> tuple[jax.Array, jax.Array]:
    """The best beam per row [b, max_decode_length] (pad after EOS) and its score [b]."""
    logits, cache, first_slot = model_steps.start(model, inputs, config.max_decode_length,
                                                     config.pad_id, config.bos_id,
                                                     config.prefix_lm)
    model_step = model_steps.stepper(model)

    def step(tokens: jax.Array, cache: Cache, i: jax.Array) -> tuple[jax.Array, Cache]:
        return model_step(tokens, cache, first_slot + i)

    return beam_search(logits, cache, step, config)


def beam_search(logits: jax.Array, cache: Cache, step: Step,
                config: DecodeConfig) -> tuple[jax.Array, jax.Array]:
    """Beam search from the first new token's `logits` [b, vocab] and the `cache` of b rows
    (reordered with `take_rows`); `step` feeds the chosen tokens of all b * num_beams beams."""
    beams, length = config.num_beams, config.max_decode_length
    t5x = config.beam_semantics == "t5x"
    early_stopping = False if config.early_stopping is None else config.early_stopping
    batch, vocab = logits.shape
    if 2 * beams > beams * vocab:
        raise ValueError(f"num_beams={beams} needs a vocabulary of at least 2 tokens.")
    rows = jnp.repeat(jnp.arange(batch), beams)
    init = {
        "i": jnp.int32(0),
        # Identical beams at the start: only the first is alive, or all would stay duplicates.
        "live_log_probs": jnp.tile(jnp.where(jnp.arange(beams) == 0, 0.0, NEG_INF), (batch, 1)),
        "live_tokens": jnp.full((batch, beams, length), config.pad_id, jnp.int32),
        "finished_scores": jnp.full((batch, beams), NEG_INF),
        "finished_tokens": jnp.full((batch, beams, length), config.pad_id, jnp.int32),
        "finished_flags": jnp.zeros((batch, beams), bool),
        "open": jnp.ones((batch,), bool),  # hf: the row still takes finished hypotheses
        "logits": logits[rows],
        "cache": take_rows(cache, rows),
    }
    # t5x: log p only falls as tokens are added and is divided by at most this.
    max_penalty = jnp.maximum(_penalty(1, config), _penalty(length, config))

    def worst_finished(state: dict) -> jax.Array:
        """Each row's worst finished score, -inf until k hypotheses have finished."""
        full = jnp.all(state["finished_flags"], axis=1)
        return jnp.where(full, state["finished_scores"].min(axis=1), NEG_INF)

    def unfinished(state: dict) -> jax.Array:
        if t5x:
            best_live = state["live_log_probs"].max(axis=1) / max_penalty
            busy = ~(worst_finished(state) > best_live)
        else:
            busy = state["open"]
            if early_stopping is True:
                busy &= ~jnp.all(state["finished_flags"], axis=1)
        return (state["i"] < length) & jnp.any(busy)

    def advance(state: dict) -> dict:
        i = state["i"]
        log_probs = jax.nn.log_softmax(state["logits"], axis=-1).reshape(batch, beams, vocab)
        candidates = (state["live_log_probs"][:, :, None] + log_probs).reshape(batch, -1)
        cand_log_probs, flat = jax.lax.top_k(candidates, 2 * beams)
        parent, token = flat // vocab, (flat % vocab).astype(jnp.int32)
        cand_tokens = jnp.take_along_axis(state["live_tokens"], parent[:, :, None], axis=1)
        cand_tokens = cand_tokens.at[:, :, i].set(token)
        ends = token == config.eos_id
        finishing = ends & (cand_log_probs > NEG_INF)
        if not t5x:
            ends |= i + 1 == length
            within_k = jnp.arange(2 * beams)[None, :] < beams
            takes = state["open"]
            if early_stopping is True:
                takes &= ~jnp.all(state["finished_flags"], axis=1)
            finishing = ends & within_k & takes[:, None] & (cand_log_probs > NEG_INF)
        cand_scores = jnp.where(finishing, cand_log_probs / _penalty(i + 1, config), NEG_INF)
        finished_scores, finished_tokens, finished_flags = _top(
            jnp.concatenate([state["finished_scores"], cand_scores], axis=1), beams,
            jnp.concatenate([state["finished_tokens"], cand_tokens], axis=1),
            jnp.concatenate([state["finished_flags"], finishing], axis=1))
        live_log_probs, live_tokens, live_parent, live_token = _top(
            jnp.where(ends, NEG_INF, cand_log_probs), beams, cand_tokens, parent, token)
        source_rows = (jnp.arange(batch)[:, None] * beams + live_parent).reshape(-1)
        logits, cache = step(live_token.reshape(-1), take_rows(state["cache"], source_rows), i)
        new = {
            "i": i + 1,
            "live_log_probs": live_log_probs,
            "live_tokens": live_tokens,
            "finished_scores": finished_scores,
            "finished_tokens": finished_tokens,
            "finished_flags": finished_flags,
            "open": state["open"],
            "logits": logits,
            "cache": cache,
        }
        if not t5x:  # transformers' early-stopping heuristic, after each step
            best_length = length if early_stopping == "never" and config.length_penalty > 0 \
                else i + 1
            best_live = live_log_probs.max(axis=1) / _penalty(best_length, config)
            new["open"] = state["open"] & (best_live > worst_finished(new))
        return new

    final = jax.lax.while_loop(unfinished, advance, init)
    # A row that finished nothing (t5x: no EOS within max_decode_length) returns its best live
    # beam and that beam's log p.
    any_finished = jnp.any(final["finished_flags"], axis=1)
    tokens = jnp.where(any_finished[:, None], final["finished_tokens"][:, 0],
                       final["live_tokens"][:, 0])
    scores = jnp.where(any_finished, final["finished_scores"][:, 0],
                       final["live_log_probs"][:, 0])
    return tokens, scores
