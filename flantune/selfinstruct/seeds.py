"""Seed tasks: the human-written tasks a Self-Instruct run starts from.

One JSON object per line, as in the Self-Instruct release's ``seed_tasks.jsonl``::

    {"id": "seed_task_0", "instruction": "...", "instances": [{"input": "", "output": "..."}],
     "is_classification": false}

``id`` and ``name`` are optional; ``input`` may be empty; every other field is required.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from flantune.data.errors import RecordError

DEFAULT_SEED_FILE = (Path(__file__).resolve().parents[1] / "assets"
                     / "self_instruct_seed_tasks.jsonl")


@dataclasses.dataclass(frozen=True)
class Instance:
    input: str
    output: str


@dataclasses.dataclass(frozen=True)
class SeedTask:
    """A task: an instruction, its instances, and whether its outputs are a finite label set."""

    instruction: str
    instances: tuple[Instance, ...]
    is_classification: bool
    id: str = ""

    def record(self) -> dict[str, Any]:
        """The task as a ``self_instruct`` JSONL record."""
        return {"id": self.id, "instruction": self.instruction,
                "instances": [{"input": i.input, "output": i.output} for i in self.instances],
                "is_classification": self.is_classification}


def default_seed_path() -> str:
    """The seed set that ships with flantune (60 tasks written for it, 20 classification)."""
    return str(DEFAULT_SEED_FILE)


def _string(raw: dict[str, Any], name: str, *, required: bool = True) -> str:
    if name not in raw or raw[name] is None:
        if required:
            raise RecordError(f"missing field '{name}'; the record has fields {sorted(raw)}")
        return ""
    value = raw[name]
    if not isinstance(value, str):
        raise RecordError(f"field '{name}' must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise RecordError(f"field '{name}' is empty")
    return value


def parse_seed_task(raw: Any, number: int) -> SeedTask:
    """One seed task from a decoded JSON value; RecordError (without a location) if malformed."""
    if not isinstance(raw, dict):
        raise RecordError(f"a seed task must be a JSON object, got {type(raw).__name__}")
    instruction = _string(raw, "instruction").strip()
    instances = raw.get("instances")
    if not isinstance(instances, list) or not instances:
        raise RecordError("field 'instances' must be a non-empty list of "
                          "{'input': ..., 'output': ...} objects")
    parsed = []
    for index, instance in enumerate(instances):
        if not isinstance(instance, dict):
            raise RecordError(f"instances[{index}] must be an object with 'input' and 'output'")
        try:
            parsed.append(Instance(_string(instance, "input", required=False).strip(),
                                   _string(instance, "output").strip()))
        except RecordError as err:
            raise RecordError(f"instances[{index}]: {err}") from None
    flag = raw.get("is_classification")
    if not isinstance(flag, bool):
        raise RecordError("field 'is_classification' must be true or false, got "
                          f"{json.dumps(flag)}")
    task_id = raw.get("id", f"seed_task_{number}")
    return SeedTask(instruction, tuple(parsed), flag, str(task_id))


def load_seed_tasks(path: str | os.PathLike[str] | None = None) -> list[SeedTask]:
    """The seed tasks of a JSONL file (default: flantune's own set), validated: a malformed line,
    a missing field or a repeated instruction is a RecordError naming the file and line."""
    path = str(path or DEFAULT_SEED_FILE)
    if not os.path.isfile(path):
        raise RecordError("seed task file not found; point seed_path (gin SELF_INSTRUCT_SEEDS) "
                          "at a JSONL file of tasks", path=path)
    tasks: list[SeedTask] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as err:
                raise RecordError(f"not valid JSON ({err.msg} at column {err.colno})",
                                  path=path, line=line_number) from None
            try:
                task = parse_seed_task(raw, len(tasks))
            except RecordError as err:
                raise RecordError(str(err), path=path, line=line_number) from None
            key = " ".join(task.instruction.lower().split())
            if key in seen:
                raise RecordError(f"the instruction repeats line {seen[key]}'s; each seed task "
                                  "needs its own instruction", path=path, line=line_number)
            seen[key] = line_number
            tasks.append(task)
    if not tasks:
        raise RecordError("the seed task file holds no tasks", path=path)
    return tasks
