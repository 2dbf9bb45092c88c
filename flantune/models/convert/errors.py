"""Errors raised when reading or writing Hugging Face checkpoints."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint does not match what the configuration expects (missing, extra or misshapen
    tensors, unknown architecture, unreadable files). Raised before any parameter is built."""
