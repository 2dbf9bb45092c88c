"""Mixture-ratio ablations: a grid of gin bindings, one run per variant, and a report."""

from flantune.sweep.grid import Axis, SweepError, Variant, parse_axis, variants
from flantune.sweep.runner import SweepConfig, run_sweep, train_command

__all__ = ["Axis", "SweepConfig", "SweepError", "Variant", "parse_axis", "run_sweep",
           "train_command", "variants"]
