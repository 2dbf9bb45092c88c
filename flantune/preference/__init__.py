"""Preference tuning after instruction tuning: DPO (sigmoid, conservative), IPO and hinge losses
against a reference model (the adapter-disabled base, a frozen copy of the starting model, or
precomputed log-probabilities), trained by flantune's own step and loop."""

from flantune.preference.config import PreferenceConfig, PreferenceConfigError
from flantune.preference.losses import pair_log_probs, pair_losses, pair_metrics, pair_sums
from flantune.preference.objective import PreferenceObjective
from flantune.preference.pair_step import PairStep
from flantune.preference.reference import PreferenceReferenceError

__all__ = [
    "PairStep", "PreferenceConfig", "PreferenceConfigError", "PreferenceObjective",
    "PreferenceReferenceError", "pair_log_probs", "pair_losses", "pair_metrics", "pair_sums",
]
