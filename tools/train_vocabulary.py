"""Trains a SentencePiece vocabulary (T5 ids, byte fallback, newlines kept) on tasks' text.

Example:
  python tools/train_vocabulary.py --mixture demo --mixture demo_heldout \
      --examples 30000 --vocab_size 8000 --output flantune/assets/demo_spm

Text is every rendered ``inputs`` and ``targets`` of the first ``--examples`` slots of each
mixture's stream (so template wording is in the vocabulary), plus any ``--text_file``.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Iterator

import numpy as np

from flantune.data.errors import DataError
from flantune.data.stream import ExampleStream
from flantune.data.tasks import flan_task_for
from flantune.data.vocabulary import train_vocabulary


def mixture_texts(name: str, examples: int, *, split: str = "train", seed: int = 0
                  ) -> Iterator[str]:
    """Rendered text of a mixture's first ``examples`` slots (flantune tasks only)."""
    stream = ExampleStream(name, split=split, seed=seed)
    choices = stream.schedule.choices(0, examples)
    for task_id in np.unique(choices):
        task_name = stream.task_names[task_id]
        found = flan_task_for(task_name)
        if found is None:
            raise DataError(f"Task '{task_name}' is a plain seqio task; its raw text is not "
                            "available here. Pass its text with --text_file instead.")
        flan_task, variant = found
        count = int((choices == task_id).sum())
        records = flan_task.num_records(split)
        for index in range(count):
            rendered = flan_task.render(split, index % records, variant, epoch=index // records)
            yield rendered["inputs"]
            yield rendered["targets"]


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mixture", action="append", default=[],
                        help="a task or mixture name (repeatable)")
    parser.add_argument("--module_import", action="append", default=["flantune.tasks"],
                        help="modules that register the tasks (default: flantune.tasks)")
    parser.add_argument("--text_file", action="append", default=[],
                        help="a UTF-8 text file, one document per line (repeatable)")
    parser.add_argument("--examples", type=int, default=20_000)
    parser.add_argument("--vocab_size", type=int, default=8000)
    parser.add_argument("--model_type", default="unigram", choices=["unigram", "bpe"])
    parser.add_argument("--output", required=True, help="output prefix; writes PREFIX.model")
    args = parser.parse_args(argv)
    for module in args.module_import:
        importlib.import_module(module)

    def texts() -> Iterator[str]:
        for name in args.mixture:
            yield from mixture_texts(name, args.examples)
        for path in args.text_file:
            with open(path, encoding="utf-8") as f:
                yield from (line.rstrip("\n") for line in f)

    path = train_vocabulary(texts(), args.output, vocab_size=args.vocab_size,
                            model_type=args.model_type)
    print(path)
    return path


if __name__ == "__main__":
    main()
