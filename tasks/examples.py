"""Example instruction-tuning tasks read from JSONL files: Alpaca, Dolly and ShareGPT styles.

The files in ``tasks/examples/`` are small samples that ship with flantune; point the same
definitions at your own files (a path per split) to tune on real instruction data. Each file
here is split deterministically: every fifth record is held out for validation.
"""

from __future__ import annotations

from pathlib import Path

import flantune
from flantune.data import FewShotConfig, JsonlSource, ModuloSplit, RecordSource
from flantune.data.templates import DIALOG_TEMPLATES, INSTRUCTION_TEMPLATES
from flantune.metrics import exact_match

DATA_DIR = Path(__file__).parent / "examples"
FEW_SHOT = FewShotConfig(max_exemplars=2, max_input_tokens=480, pool_size=200)


def split_file(path: Path, split: str, **source_options) -> RecordSource:
    return ModuloSplit(JsonlSource(path, **source_options), n=5, remainder=4,
                       holdout=split == "validation")


@flantune.task("example_alpaca", templates=INSTRUCTION_TEMPLATES, metric_fns=[exact_match],
               few_shot=FEW_SHOT)
def example_alpaca(split):
    """Alpaca-style records (instruction, input, output)."""
    return split_file(DATA_DIR / "alpaca_style.jsonl", split, format="alpaca",
                      task="example_alpaca")


@flantune.task("example_dolly", templates=INSTRUCTION_TEMPLATES, metric_fns=[exact_match],
               few_shot=FEW_SHOT)
def example_dolly(split):
    """Dolly-style records (instruction, context, response, category)."""
    return split_file(DATA_DIR / "dolly_style.jsonl", split, format="dolly",
                      task="example_dolly")


@flantune.task("example_sharegpt", templates=DIALOG_TEMPLATES, metric_fns=[exact_match],
               few_shot=FEW_SHOT)
def example_sharegpt(split):
    """ShareGPT-style conversations: every assistant turn is a target, earlier turns context."""
    return split_file(DATA_DIR / "sharegpt_style.jsonl", split, format="sharegpt",
                      task="example_sharegpt")


@flantune.mixture("example_instructions", default_rate=flantune.examples_proportional())
def example_instructions():
    """The three example instruction tasks, zero- and few-shot."""
    return [f"{name}_{variant}" for name in ("example_alpaca", "example_dolly", "example_sharegpt")
            for variant in ("zsnoopt", "fsnoopt")]
