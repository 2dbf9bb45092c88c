"""Preference data: (prompt, chosen, rejected) records, tasks of them, and rows that keep a pair's
two sequences side by side (for preference tuning, flantune.preference)."""

from flantune.data.preference import records  # noqa: F401 - registers the preference formats
from flantune.data.preference.converter import PreferenceFeatureConverter, pair_budget, pair_slots
from flantune.data.preference.records import hh_preference, preference
from flantune.data.preference.tasks import (
    EncodedPair,
    PreferenceTask,
    preference_task,
    preference_task_for,
    register_preference_task,
)

__all__ = [
    "EncodedPair", "PreferenceFeatureConverter", "PreferenceTask", "hh_preference",
    "pair_budget", "pair_slots", "preference", "preference_task", "preference_task_for",
    "register_preference_task",
]
