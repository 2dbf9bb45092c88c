"""Every filter on hand-made cases."""

import pytest

from flantune.selfinstruct import filters
from flantune.selfinstruct.seeds import Instance

CONFIG = filters.FilterConfig()


@pytest.mark.parametrize("text, complete, reason", [
    ("Give three tips for staying healthy.", True, None),
    ("Give three tips for staying healthy.", False, "truncated"),
    ("", True, "empty"),
    ("Say hello now", True, "too_short"),
    (" ".join(["word"] * 151), True, "too_long"),
    (" ".join(["word"] * 150), True, None),
    ("Describe the image in one sentence.", True, "blacklist"),
    ("Describe the IMAGES in one sentence.", True, "blacklist"),
    ("Please go to the store and buy milk.", True, "blacklist"),
    ("Describe the imagery in one sentence.", True, None),  # a whole word only
    ("Explain a mapping between two sets.", True, None),
    ("Write a program that sorts a list.", True, "write_a_program"),
    ("Write a poem that sorts a list.", True, None),
    ('"Quote" this sentence back to me.', True, "punctuation"),
    ("Érase una vez: continue the story.", True, "non_ascii"),
])
def test_instruction_filters(text, complete, reason):
    assert filters.instruction_rejection(text, complete, CONFIG) == reason


def test_normalization_and_thresholds():
    assert filters.normalize_instruction("  list  five\nUS states ") == "List five US states"
    config = filters.FilterConfig(min_words=2, max_words=3, blacklist=(), banned_prefixes=())
    assert filters.instruction_rejection("One", True, config) == "too_short"
    assert filters.instruction_rejection("Draw two", True, config) is None
    assert filters.instruction_rejection("a b c d", True, config) == "too_long"
    with pytest.raises(ValueError, match="min_words"):
        filters.FilterConfig(min_words=0)


def test_instance_filters_drop_bad_and_repeated_instances():
    verdict = filters.filter_instances([
        Instance("a", "b"), Instance("x", ""), Instance("same", "same"), Instance("q:", "r"),
        Instance("c", "d:"), Instance("a", "b"), Instance("", "e"), Instance("", "f")])
    assert verdict.kept == [Instance("a", "b"), Instance("", "e"), Instance("", "f")]
    assert verdict.rejected == {"empty_output": 1, "input_equals_output": 1,
                                "ends_with_colon": 2, "duplicate": 1}
    assert verdict.task_rejection is None


def test_one_input_with_two_outputs_drops_the_task():
    verdict = filters.filter_instances([Instance("2+2", "4"), Instance("2+2", "5")])
    assert verdict.kept == [] and verdict.task_rejection == "conflicting_outputs"
    # Empty inputs may have different outputs (a task without input has many answers).
    assert filters.filter_instances([Instance("", "4"), Instance("", "5")]).task_rejection is None
    assert filters.filter_instances([Instance("x", "")]).task_rejection == "no_instances"


def test_lists_from_gin_work_as_tuples():
    config = filters.FilterConfig(blacklist=["cat"], banned_prefixes=["Tell me"])
    assert filters.instruction_rejection("Tell me four things now", True, config) == \
        "write_a_program"
    assert filters.instruction_rejection("Describe the cat in detail", True, config) == \
        "blacklist"
