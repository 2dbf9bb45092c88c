"""The three prompts of Self-Instruct (Wang et al. 2022), as text.

- instruction generation: a numbered list of in-context instructions, ending with the next
  number for the model to continue;
- classification identification: few-shot "is this task a classification task?";
- instance generation: few-shot examples of tasks with their instances, input-first for
  generation tasks and output-first (class label, then an input for it) for classification ones.

The wording is flantune's; the structure (numbered list, 6 human + 2 generated instructions,
input-first vs output-first) is the paper's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from flantune.selfinstruct.seeds import SeedTask

INSTRUCTION_HEADER = "Come up with a series of tasks:"
CLASSIFICATION_HEADER = ("Can the following task be regarded as a classification task with a "
                         "finite set of output labels?")
INPUT_FIRST_HEADER = ("Come up with examples for the following tasks. Try to give several "
                      "examples. If a task needs no input, give only the output.")
OUTPUT_FIRST_HEADER = ("Given a classification task and its class labels, give an input for "
                       "each class label. If a task needs no input, give only the label.")


def one_line(text: str) -> str:
    """Whitespace runs -> one space; no trailing colon (it would run into the next number)."""
    return re.sub(r"\s+", " ", text).strip().rstrip(":")


def instruction_prompt(instructions: Sequence[str]) -> str:
    """"Come up with a series of tasks:", the instructions numbered 1..n, then "n+1."."""
    lines = [INSTRUCTION_HEADER]
    lines += [f"{number}. {one_line(text)}" for number, text in enumerate(instructions, start=1)]
    lines.append(f"{len(instructions) + 1}.")
    return "\n".join(lines)


def _answer(flag: bool) -> str:
    return "Yes" if flag else "No"


def classification_prompt(examples: Sequence[SeedTask], instruction: str) -> str:
    """Few-shot yes/no: each example task with its answer, then the new one unanswered."""
    blocks = [CLASSIFICATION_HEADER]
    for task in examples:
        blocks.append(f"Task: {one_line(task.instruction)}\n"
                      f"Is it classification? {_answer(task.is_classification)}")
    blocks.append(f"Task: {one_line(instruction)}\nIs it classification?")
    return "\n\n".join(blocks)


def _input_first(task: SeedTask) -> str:
    lines = [f"Task: {one_line(task.instruction)}"]
    for number, instance in enumerate(task.instances, start=1):
        lines.append(f"Example {number}")
        if instance.input:
            lines.append(f"Input: {instance.input}")
        lines.append(f"Output: {instance.output}")
    return "\n".join(lines)


def _output_first(task: SeedTask) -> str:
    lines = [f"Task: {one_line(task.instruction)}"]
    for instance in task.instances:
        lines.append(f"Class label: {instance.output}")
        if instance.input:
            lines.append(f"Input: {instance.input}")
    return "\n".join(lines)


def instance_prompt(examples: Sequence[SeedTask], instruction: str,
                    is_classification: bool) -> str:
    """Few-shot instance generation for ``instruction``: output-first for classification tasks,
    input-first otherwise; the prompt ends where the model's first instance begins."""
    if is_classification:
        blocks = [OUTPUT_FIRST_HEADER, *(_output_first(t) for t in examples),
                  f"Task: {one_line(instruction)}\nClass label:"]
    else:
        blocks = [INPUT_FIRST_HEADER, *(_input_first(t) for t in examples),
                  f"Task: {one_line(instruction)}\nExample 1"]
    return "\n\n".join(blocks)
