"""The bad-input suite: every malformed input gets a clear error naming what and where, and no
good record is lost (RELIABILITY.md lists the same cases)."""

from __future__ import annotations

import pytest

import flantune.tasks  # noqa: F401  (demo tasks the checkpoint cases train on)
from tests.robustness.cases import all_cases, run_case

CASES = all_cases()


def test_the_suite_covers_every_kind_of_input():
    categories = {c.category for c in CASES}
    assert categories == {"file sources", "conversation records", "templates", "gin bindings",
                          "vocabulary files", "checkpoints", "adapters", "chat",
                          "preference"}
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=[pytest.mark.slow]
                                               if c.category in ("checkpoints", "adapters")
                                               else [])
                                  for c in CASES])
def test_bad_input_gets_a_clear_error(case, tmp_path):
    outcome = run_case(case, tmp_path)
    assert outcome.status == "clear", outcome.detail
