"""Errors raised by decoding."""

from __future__ import annotations


class DecodingError(ValueError):
    """Decoding cannot run as asked."""


class DecodeConfigError(DecodingError):
    """A `DecodeConfig` field is out of range."""


class DecodeBatchError(DecodingError):
    """A batch given to `generate` is missing a feature or is badly shaped or padded."""
