"""Checks shared by the prefix- and prompt-tuning tests: decoding token by token with the
key/value cache gives the logits of one forward pass, and a packed row its examples' own."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from tests.models.jit_forward import forward


@nnx.jit
def step(model, tokens, cache, index):
    return model.decode_step(tokens, cache, index)


def _steps(model, tokens: np.ndarray, cache, first: int) -> np.ndarray:
    """Logits of a prefill of `first` tokens, then one token per step."""
    logits, cache = step(model, jnp.asarray(tokens[:, :first]), cache, 0)
    out = [logits]
    for t in range(first, tokens.shape[1]):
        logits, cache = step(model, jnp.asarray(tokens[:, t:t + 1]), cache, t)
        out.append(logits)
    return np.concatenate(out, axis=1)


def check_t5(model, rng: np.random.Generator, pad_second_row: bool = False) -> None:
    enc = rng.integers(2, 50, (2, 9))
    if pad_second_row:
        enc[1, 6:] = 0
    enc = jnp.asarray(enc)
    dec = rng.integers(2, 50, (2, 10))
    dec[:, 0] = 0
    full = forward(model, enc, jnp.asarray(dec))
    cache = nnx.jit(lambda m, e: m.init_decode_cache(m.encode(e), e, 12))(model, enc)
    np.testing.assert_allclose(_steps(model, dec, cache, 2), full, atol=1e-5, rtol=0)


def check_decoder(model, rng: np.random.Generator) -> None:
    """Row 1 is left-padded by 3: its tokens start at slot 3 and at position 0 (+ the
    adapter's slots)."""
    tokens = rng.integers(2, 50, (2, 12))
    want_0 = forward(model, jnp.asarray(tokens[:1]))[0]
    want_1 = forward(model, jnp.asarray(tokens[1:, 3:]))[0]
    padded = tokens.copy()
    padded[1, :3] = 0
    got = _steps(model, padded, model.init_decode_cache(2, 14, jnp.array([0, 3])), 5)
    np.testing.assert_allclose(got[0], want_0, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got[1, 3:], want_1, atol=1e-5, rtol=0)


def packed(lengths: list[int], total: int, rng) -> tuple[np.ndarray, ...]:
    tokens = np.zeros((1, total), np.int32)
    segments = np.zeros((1, total), np.int32)
    positions = np.zeros((1, total), np.int32)
    start = 0
    pieces = []
    for index, length in enumerate(lengths):
        piece = rng.integers(2, 50, length)
        tokens[0, start:start + length] = piece
        segments[0, start:start + length] = index + 1
        positions[0, start:start + length] = np.arange(length)
        pieces.append((start, piece))
        start += length
    return tokens, segments, positions, pieces


def check_packed_decoder(model, rng: np.random.Generator, lengths: list[int],
                         total: int) -> None:
    """Each example of a packed row has the logits it has alone."""
    tokens, segments, positions, pieces = packed(lengths, total, rng)
    together = forward(model, jnp.asarray(tokens), decoder_segment_ids=jnp.asarray(segments),
                       decoder_positions=jnp.asarray(positions))[0]
    for start, piece in pieces:
        alone = forward(model, jnp.asarray(piece[None]))[0]
        np.testing.assert_allclose(together[start:start + len(piece)], alone, atol=1e-5, rtol=0)


def check_packed_t5(model, rng: np.random.Generator) -> None:
    """Each example of a packed encoder-decoder row has the logits it has alone."""
    enc, enc_segments, enc_positions, enc_pieces = packed([4, 6], 11, rng)
    dec, dec_segments, dec_positions, dec_pieces = packed([3, 5], 9, rng)
    for start, piece in dec_pieces:
        piece[0] = 0  # each target starts with the decoder start id
        dec[0, start:start + len(piece)] = piece
    together = forward(model, jnp.asarray(enc), jnp.asarray(dec),
                       encoder_segment_ids=jnp.asarray(enc_segments),
                       decoder_segment_ids=jnp.asarray(dec_segments),
                       encoder_positions=jnp.asarray(enc_positions),
                       decoder_positions=jnp.asarray(dec_positions))[0]
    for (_, enc_piece), (start, dec_piece) in zip(enc_pieces, dec_pieces, strict=True):
        alone = forward(model, jnp.asarray(enc_piece[None]), jnp.asarray(dec_piece[None]))[0]
        np.testing.assert_allclose(together[start:start + len(dec_piece)], alone, atol=1e-5,
                                   rtol=0)
