"""Small tasks and mixtures registered for tests (importing this module registers them)."""

from __future__ import annotations

import seqio
import tensorflow as tf

import flantune
from flantune.data import FewShotConfig, Template
from flantune.metrics import exact_match

WORDS = ["apple", "river", "stone", "cloud", "amber", "maple", "orbit", "piano", "quartz",
         "saddle", "tiger", "velvet", "walnut", "yonder", "zephyr", "lantern", "meadow",
         "harbor", "glacier", "falcon"]

REVERSE_TEMPLATES = [
    Template("Reverse the word {word}.", "{reversed}", name="rev_plain"),
    Template("Write '{word}' backwards.", "{reversed}", name="rev_backwards"),
    Template("Word: {word}\nReversed:", "{reversed}", name="rev_labelled"),
]


def _reverse_records(split: str):
    offset = {"train": 0, "validation": 7}[split]
    count = {"train": 40, "validation": 12}[split]
    for i in range(count):
        word = WORDS[(i + offset) % len(WORDS)] + str(i)
        yield {"word": word, "reversed": word[::-1]}


@flantune.task("test_reverse", templates=REVERSE_TEMPLATES, metric_fns=[exact_match],
               few_shot=FewShotConfig(max_exemplars=2, max_input_tokens=200, pool_size=30))
def test_reverse(split):
    """Reverse a word (a generator task)."""
    yield from _reverse_records(split)


YES_NO_TEMPLATES = [
    Template("Is {number} even?\n{options_}", "{answer}", name="even_q"),
    Template("Question: is the number {number} divisible by two?\n{options_}", "{answer}",
             name="even_div"),
    Template("{number}: even or not?", "{answer}", name="even_short", accepts_options=False),
]


def _even_records(split: str):
    start = {"train": 0, "validation": 1000}[split]
    return [{"number": str(n), "answer": "yes" if n % 2 == 0 else "no", "options": ["yes", "no"]}
            for n in range(start, start + 60)]


@flantune.task("test_even", templates=YES_NO_TEMPLATES, has_options=True,
               few_shot=FewShotConfig(max_exemplars=2, max_input_tokens=200, pool_size=30))
def test_even(split):
    """Is a number even (a list-returning task with answer options)."""
    return _even_records(split)


def _plain_dataset(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
    del shuffle_files, seed
    count = {"train": 30, "validation": 10}[split]
    return tf.data.Dataset.from_tensor_slices({
        "inputs": [f"count to {i}" for i in range(count)],
        "targets": [" ".join(str(j) for j in range(1, i % 5 + 2)) for i in range(count)],
    })


if "test_plain_seqio" not in seqio.TaskRegistry.names():
    seqio.TaskRegistry.add(
        "test_plain_seqio",
        source=seqio.FunctionDataSource(_plain_dataset, splits=["train", "validation"],
                                        num_input_examples={"train": 30, "validation": 10}),
        preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
        output_features=flantune.data.default_output_features(),
        metric_fns=[exact_match],
    )


@flantune.mixture("test_mix", default_rate=flantune.examples_proportional(cap=50))
def test_mix():
    return ["test_reverse_zsnoopt", "test_reverse_fsnoopt", "test_even_zsopt",
            ("test_even_zsnoopt", 10.0)]


@flantune.mixture("test_nested")
def test_nested():
    return [("test_mix", 3.0), ("test_plain_seqio", 1.0)]
