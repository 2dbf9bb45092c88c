"""Seeded, order-independent randomness for the data layer.

Every random choice in flantune's data layer (template, option style, option order, few-shot
exemplars, mixing) is drawn from a generator keyed by the run seed and by *what* is being
decided (task, split, example index, purpose). The draw for one example therefore never
depends on which other examples were drawn before it, so pipelines can start anywhere.
"""

from __future__ import annotations

import hashlib

import numpy as np


def stable_hash(*parts: object) -> int:
    """A 64-bit hash of ``parts`` that is the same in every process (unlike ``hash``)."""
    digest = hashlib.blake2b(repr(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def rng_for(seed: int, *keys: object) -> np.random.Generator:
    """A numpy Generator determined only by ``seed`` and ``keys``."""
    return np.random.default_rng([seed & 0xFFFFFFFF, stable_hash(*keys) & 0xFFFFFFFFFFFFFFFF])
