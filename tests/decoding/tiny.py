"""Tiny models and batches shared by the decoding tests."""

from __future__ import annotations

import numpy as np

from flantune.models import DecoderConfig, T5Config

VOCAB = 96

T5_TINY = T5Config(vocab_size=VOCAB, emb_dim=32, num_heads=4, head_dim=8, mlp_dim=48,
                   num_encoder_layers=2, num_decoder_layers=2, relative_attention_num_buckets=8,
                   relative_attention_max_distance=6)
DECODER_TINY = DecoderConfig(vocab_size=VOCAB, emb_dim=32, num_heads=4, num_kv_heads=2,
                             head_dim=8, mlp_dim=48, num_layers=2, sliding_window=5)

PROMPTS = [[5, 17, 33, 9], [40, 2, 71, 8, 66, 12, 30], [88]]


def encoder_batch() -> np.ndarray:
    """Three 0-padded encoder rows of different lengths."""
    enc = np.random.default_rng(4).integers(2, VOCAB, (3, 11)).astype(np.int32)
    enc[1, 7:] = 0
    enc[2, 3:] = 0
    return enc
