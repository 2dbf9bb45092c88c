"""Evaluation examples of a task: the rendered text, its tokens, and what scoring needs.

flantune tasks are rendered record by record (so the raw record, its answer options and the
source's own scorer stay at hand); tasks registered directly with SeqIO are read through
``seqio.Task.get_dataset`` and their ``*_pretokenized`` features.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import seqio

from flantune.data.chat.tasks import ChatTask, chat_task_for
from flantune.data.errors import DataError
from flantune.data.mixtures import leaf_tasks
from flantune.data.preference.tasks import preference_task_for
from flantune.data.tasks import flan_task_for, token_length_fn


class TaskEvalError(RuntimeError):
    """One task cannot be evaluated; the message names the task and what to do."""

    def __init__(self, task: str, message: str):
        super().__init__(f"task '{task}': {message}")
        self.task = task


@dataclasses.dataclass
class EvalExample:
    """One example to predict or score, with the SeqIO-style features postprocessors see."""

    task: str
    index: int
    inputs: str
    targets: str
    input_tokens: np.ndarray  # int32, EOS appended as the task's features say
    target_tokens: np.ndarray
    options: tuple[str, ...] = ()
    record: Mapping[str, Any] | None = None
    score_answer: Callable[[str | None, Mapping[str, Any]], float] | None = None
    # Chat tasks: the template's end-of-turn id. The prompt is the conversation rendered with
    # the generation prompt, decoded causally as given (as transformers does); None otherwise.
    stop_id: int | None = None

    def features(self) -> dict[str, Any]:
        """What ``postprocess_fn(..., example=...)`` receives (SeqIO's pretokenized keys, plus
        the raw ``record`` and the source's ``score_answer`` when known)."""
        out: dict[str, Any] = {"inputs_pretokenized": self.inputs,
                               "targets_pretokenized": self.targets,
                               "inputs": self.input_tokens, "targets": self.target_tokens}
        if self.options:
            out["options"] = list(self.options)
        if self.record is not None:
            out["record"] = self.record
        if self.score_answer is not None:
            out["score_answer"] = self.score_answer
        return out


def task_names(mixture_or_task: str | Sequence[str]) -> list[str]:
    """The leaf task names of a mixture, a task name, or a list of either (order kept,
    duplicates dropped)."""
    names = [mixture_or_task] if isinstance(mixture_or_task, str) else list(mixture_or_task)
    out: list[str] = []
    for name in names:
        try:
            leaves = leaf_tasks(name)
        except DataError as err:
            raise TaskEvalError(name, str(err)) from None
        out += [t.name for t in leaves if t.name not in out]
    return out


def encode(vocabulary: seqio.Vocabulary, text: str, add_eos: bool) -> np.ndarray:
    ids = list(vocabulary.encode(text))
    if add_eos:
        ids.append(vocabulary.eos_id)
    return np.asarray(ids, np.int32)


def load_examples(task_name: str, split: str, max_examples: int | None = None
                  ) -> list[EvalExample]:
    """The first ``max_examples`` examples of ``split`` (all if None), in source order."""
    task = seqio.get_mixture_or_task(task_name)
    if split not in task.splits:
        raise TaskEvalError(task_name, f"has no split '{split}' (its splits: "
                                       f"{list(task.splits)}); evaluate another split.")
    if preference_task_for(task_name) is not None:
        raise TaskEvalError(task_name, "is a preference task (prompt, chosen, rejected): it has "
                                       "no single reference to decode; its held-out pairs are "
                                       "scored in the preference run (PreferenceConfig."
                                       "eval_split). Evaluate an instruction or chat task.")
    chat = chat_task_for(task_name)
    if chat is not None:
        return _chat_examples(chat, split, max_examples)
    flan = flan_task_for(task_name)
    if flan is None:
        return _seqio_examples(task, split, max_examples)
    flan_task, variant = flan
    count = flan_task.num_records(split)
    count = count if max_examples is None else min(count, max_examples)
    features = task.output_features
    length_fn = token_length_fn(features)
    source = flan_task.source(split)
    scorer = getattr(source, "score_answer", None)
    examples = []
    for index in range(count):
        rendered = flan_task.render(split, index, variant, length_fn=length_fn)
        record = flan_task.record(split, index)
        options = tuple(str(o) for o in record.get("options", ())) if variant.with_options \
            else ()
        examples.append(EvalExample(
            task=task_name, index=index, inputs=rendered["inputs"], targets=rendered["targets"],
            input_tokens=encode(features["inputs"].vocabulary, rendered["inputs"],
                                features["inputs"].add_eos),
            target_tokens=encode(features["targets"].vocabulary, rendered["targets"],
                                 features["targets"].add_eos),
            options=options, record=record, score_answer=scorer))
    return examples


def _chat_examples(chat: ChatTask, split: str, max_examples: int | None) -> list[EvalExample]:
    """A chat task's conversations up to their last assistant turn, which is the reference."""
    count = chat.num_records(split)
    count = count if max_examples is None else min(count, max_examples)
    stop_id = chat.end_of_turn_id()
    examples = []
    for index in range(count):
        prompt, tokens, answer = chat.prompt_and_answer(split, index)
        examples.append(EvalExample(
            # The reference without surrounding spaces, as predictions are compared (several
            # templates strip them from what the model is trained to write).
            task=chat.name, index=index, inputs=prompt, targets=answer.strip(),
            input_tokens=tokens,
            target_tokens=np.asarray([*chat.vocabulary.encode(answer), stop_id], np.int32),
            record=chat.record(split, index), stop_id=stop_id))
    return examples


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _seqio_examples(task: seqio.Task, split: str, max_examples: int | None
                    ) -> list[EvalExample]:
    dataset = task.get_dataset(sequence_length=None, split=split, shuffle=False, num_epochs=1)
    if max_examples is not None:
        dataset = dataset.take(max_examples)
    examples = []
    for index, ex in enumerate(dataset.as_numpy_iterator()):
        missing = [k for k in ("inputs", "targets") if k not in ex]
        if missing:
            raise TaskEvalError(task.name, f"its examples lack {missing} (features: "
                                           f"{sorted(ex)}); evaluation needs inputs and targets.")
        inputs = _text(ex.get("inputs_pretokenized", task.output_features["inputs"].vocabulary
                              .decode(ex["inputs"].tolist())))
        targets = _text(ex.get("targets_pretokenized", task.output_features["targets"]
                               .vocabulary.decode(ex["targets"].tolist())))
        examples.append(EvalExample(
            task=task.name, index=index, inputs=inputs, targets=targets,
            input_tokens=np.asarray(ex["inputs"], np.int32),
            target_tokens=np.asarray(ex["targets"], np.int32),
            options=tuple(_text(o) for o in ex.get("options", ()))))
    return examples


def truncate(tokens: np.ndarray, length: int, eos_id: int) -> tuple[np.ndarray, bool]:
    """``tokens`` cut to ``length`` with EOS kept last, as the feature converters do."""
    if tokens.size <= length:
        return tokens, False
    return np.concatenate([tokens[:length - 1], [eos_id]]).astype(np.int32), True
