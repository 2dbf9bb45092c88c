"""Parsing generations: numbered lists, yes/no, instances; malformed text never raises."""

import pytest

from flantune.selfinstruct.parsing import (
    parse_input_first,
    parse_instructions,
    parse_is_classification,
    parse_output_first,
)
from flantune.selfinstruct.seeds import Instance


def _texts(items):
    return [(i.text.strip(), i.complete) for i in items]


def test_a_numbered_list_continues_from_the_prompt_number():
    text = " Sort the words.\n10. Add 3.5 and 2.\n11 . Name a city.\n12. Unfinished ite"
    assert _texts(parse_instructions(text, 9, 15, truncated=True)) == [
        ("Sort the words.", True), ("Add 3.5 and 2.", True), ("Name a city.", True),
        ("Unfinished ite", False)]
    # Not truncated: the last item is whole.
    assert _texts(parse_instructions(text, 9, 15, truncated=False))[-1] == ("Unfinished ite", True)


def test_the_list_stops_at_a_blank_line_or_after_the_last_number():
    assert _texts(parse_instructions(" A b c d.\n\n10. Ignored.", 9, 15, True)) == [
        ("A b c d.", True)]
    text = " One.\n10. Two.\n11. Three.\n12. Never"
    assert _texts(parse_instructions(text, 9, 10, True)) == [("One.", True), ("Two.", True)]


def test_numbers_out_of_order_stay_inside_an_item():
    # "12." before "10." does not start an item; "10." does.
    text = " Explain 12. apples\n10. Next"
    assert _texts(parse_instructions(text, 9, 15, False)) == [
        ("Explain 12. apples", True), ("Next", True)]


@pytest.mark.parametrize("text", ["", "\n", "....", "10.10.10.", "\x00\ufffd", " 9. 9. 9."])
def test_garbage_parses_to_candidates_without_raising(text):
    items = parse_instructions(text, 9, 15, truncated=True)
    assert len(items) >= 1


@pytest.mark.parametrize("text, expected", [
    (" Yes", True), ("yes.", True), (" No\n\nTask:", False), ("NO!", False), ("", None),
    ("Maybe", None), ("Yesterday", None)])
def test_yes_no_answers(text, expected):
    assert parse_is_classification(text) is expected


def test_input_first_instances():
    text = ("\nInput: 2 + 2\nOutput: 4\nExample 2\nInput: 3 + 3\nOutput: 6\nInput: extra\n"
            "Example 3\nOutput: no input here\nExample 4\nInput: cut")
    assert parse_input_first(text, truncated=True) == [
        Instance("2 + 2", "4"), Instance("3 + 3", "6"), Instance("", "no input here")]
    # An input without an output: its output is empty (the instance filter drops it).
    assert parse_input_first(text, truncated=False)[-1] == Instance("", "")
    # The model going on to a next task block: that part is dropped, the rest is whole.
    text = "\nOutput: done\n\nTask: Another task\nExample 1\nOutput: x"
    assert parse_input_first(text, truncated=True) == [Instance("", "done")]


def test_output_first_instances():
    text = " Positive\nInput: I love it\nClass label: Negative\nInput: I hate it\nClass label: Neu"
    assert parse_output_first(text, truncated=True) == [
        Instance("I love it", "Positive"), Instance("I hate it", "Negative")]
    assert parse_output_first(" Yes", truncated=False) == [Instance("", "Yes")]
    assert parse_output_first("", truncated=False) == []


def test_a_colon_after_the_prompts_example_number_is_not_part_of_the_input():
    assert parse_input_first(":\nInput: foo\nOutput: bar", truncated=False) == [
        Instance("foo", "bar")]
