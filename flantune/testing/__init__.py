"""Helpers for tests and benchmarks that need several simulated devices or processes."""

from flantune.testing.multiprocess import MultiprocessError, free_port, run_python

__all__ = ["MultiprocessError", "free_port", "run_python"]
