"""Decoder-only prompts: a batch is left-padded so every row's last prompt token sits in the same
column and generation starts at one shared cache slot."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from flantune.decoding.errors import DecodeBatchError


def left_pad_prompts(prompts: Sequence[Sequence[int]], *, pad_id: int = 0,
                     length: int | None = None) -> dict[str, np.ndarray]:
    """`{"decoder_input_tokens": int32 [len(prompts), length]}` with each prompt right-aligned
    after `pad_id`s. `length` defaults to the longest prompt."""
    if not prompts:
        raise DecodeBatchError("left_pad_prompts got no prompts; pass at least one.")
    longest = max(len(p) for p in prompts)
    length = longest if length is None else length
    if longest > length:
        raise DecodeBatchError(
            f"a prompt has {longest} tokens, more than length={length}; raise length or "
            "shorten the prompt.")
    tokens = np.full((len(prompts), length), pad_id, np.int32)
    for row, prompt in enumerate(prompts):
        if len(prompt) == 0:
            raise DecodeBatchError(f"prompt {row} is empty; every prompt needs a token.")
        if pad_id in prompt:
            raise DecodeBatchError(
                f"prompt {row} contains pad_id={pad_id}, which marks padding; remove it.")
        tokens[row, length - len(prompt):] = prompt
    return {"decoder_input_tokens": tokens}


def check_left_padded(tokens: np.ndarray, pad_id: int) -> None:
    """Raises DecodeBatchError unless every row is padding then at least one real token."""
    real = tokens != pad_id
    empty = np.flatnonzero(~real.any(axis=1))
    if empty.size:
        raise DecodeBatchError(
            f"decoder_input_tokens row {int(empty[0])} is all padding; every prompt needs a token.")
    # Left-padded: once a row has a real token, it has no more padding.
    seen = np.logical_or.accumulate(real, axis=1)
    bad = np.flatnonzero((seen & ~real).any(axis=1))
    if bad.size:
        raise DecodeBatchError(
            f"decoder_input_tokens row {int(bad[0])} has padding after a prompt token; "
            "decoder-only prompts must be left-padded (build them with "
            "flantune.decoding.left_pad_prompts).")
