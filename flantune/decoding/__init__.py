"""Decoding with a key/value cache: greedy, sampling (temperature, top-k, top-p) and beam search
for encoder-decoder and decoder-only models, jitted and shardable like training."""

from flantune.decoding.beam_search import length_penalty
from flantune.decoding.config import DecodeConfig, Generated
from flantune.decoding.errors import DecodeBatchError, DecodeConfigError, DecodingError
from flantune.decoding.generate import generate, make_generate_fn
from flantune.decoding.prompts import left_pad_prompts

__all__ = [
    "DecodeBatchError",
    "DecodeConfig",
    "DecodeConfigError",
    "DecodingError",
    "Generated",
    "generate",
    "left_pad_prompts",
    "length_penalty",
    "make_generate_fn",
]
