"""Sweep axes and the variants they make."""

from __future__ import annotations

import pytest

from flantune.sweep.grid import SweepError, parse_axis, variants


def test_parse_axis_reads_python_literals():
    axis = parse_axis("HELDOUT_CLUSTERS=[['words'], ['logic', 'arithmetic']]")
    assert axis.name == "HELDOUT_CLUSTERS"
    assert axis.values == (["words"], ["logic", "arithmetic"])
    assert parse_axis("flantune.ablation_mixture.cap = [100, None]").values == (100, None)


@pytest.mark.parametrize("text, message", [
    ("NOVALUES", "write NAME=\\[value"),
    ("X=[1, 2", "not a Python literal"),
    ("X=[]", "non-empty list"),
    ("X=3", "non-empty list"),
    ("X=[1, 1]", "repeats a value"),
    ("1X=[1]", "write NAME"),
])
def test_bad_axes_say_what_to_write(text, message):
    with pytest.raises(SweepError, match=message):
        parse_axis(text)


def test_variants_are_the_product_with_readable_unique_names():
    grid = variants([parse_axis("A.cap=[10, 20]"), parse_axis("SHARE=[0.2, 0.8, 1.0]")])
    assert len(grid) == 6
    assert grid[0].as_dict() == {"A.cap": 10, "SHARE": 0.2}
    assert grid[-1].as_dict() == {"A.cap": 20, "SHARE": 1.0}
    assert grid[0].name == "cap=10,SHARE=0.2"
    assert len({v.name for v in grid}) == 6
    assert grid[1].gin_bindings() == ["--gin.A.cap=10", "--gin.SHARE=0.8"]
    listed = variants([parse_axis("H=[['words'], ['logic', 'arithmetic']]")])
    assert [v.name for v in listed] == ["H=words", "H=logic+arithmetic"]
    assert listed[1].gin_bindings() == ["--gin.H=['logic', 'arithmetic']"]


def test_colliding_names_and_repeated_axes_are_refused():
    with pytest.raises(SweepError, match="same directory name"):
        variants([parse_axis("X=['a b', 'a-b']")])
    with pytest.raises(SweepError, match="repeat a name"):
        variants([parse_axis("X=[1]"), parse_axis("X=[2]")])
