"""Seed task files: the shipped set loads; malformed ones fail naming file and line."""

import json

import pytest

from flantune.data.errors import RecordError
from flantune.selfinstruct import default_seed_path, filters, load_seed_tasks
from flantune.selfinstruct.novelty import NoveltyIndex


def test_the_shipped_seed_set_is_valid_and_passes_its_own_filters():
    tasks = load_seed_tasks()
    assert len(tasks) == 60 and sum(t.is_classification for t in tasks) == 20
    config = filters.FilterConfig()
    index = NoveltyIndex()
    for task in tasks:
        assert filters.instruction_rejection(task.instruction, True, config) is None
        novel, score, _ = index.check_and_add(task.instruction)
        assert novel, (task.instruction, score)
        verdict = filters.filter_instances(task.instances)
        assert verdict.task_rejection is None and len(verdict.kept) == len(task.instances)
    assert load_seed_tasks(default_seed_path()) == tasks


def _write(tmp_path, lines):
    path = tmp_path / "seeds.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


GOOD = json.dumps({"instruction": "Name a color.", "instances": [{"input": "", "output": "Red"}],
                   "is_classification": False})


@pytest.mark.parametrize("bad, message", [
    ("{not json", "not valid JSON"),
    (json.dumps({"instances": [{"output": "x"}], "is_classification": False}),
     "missing field 'instruction'"),
    (json.dumps({"instruction": "Do it.", "instances": [], "is_classification": False}),
     "'instances' must be a non-empty list"),
    (json.dumps({"instruction": "Do it.", "instances": [{"input": "a"}],
                 "is_classification": False}), "instances[0]: missing field 'output'"),
    (json.dumps({"instruction": "Do it.", "instances": [{"output": "a"}],
                 "is_classification": "no"}), "'is_classification' must be true or false"),
    (json.dumps({"instruction": " name a  COLOR. ", "instances": [{"output": "a"}],
                 "is_classification": False}), "repeats line 1"),
])
def test_a_malformed_seed_task_names_file_and_line(tmp_path, bad, message):
    path = _write(tmp_path, [GOOD, bad])
    with pytest.raises(RecordError) as error:
        load_seed_tasks(path)
    assert f"{path}:2" in str(error.value) and message in str(error.value)


def test_a_missing_or_empty_seed_file_is_an_error(tmp_path):
    with pytest.raises(RecordError, match="not found"):
        load_seed_tasks(tmp_path / "nope.jsonl")
    with pytest.raises(RecordError, match="no tasks"):
        load_seed_tasks(_write(tmp_path, [""]))
