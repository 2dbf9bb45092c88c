"""Trains the demo's Hugging Face chat tokenizer (byte-level BPE) on the demo's text.

Example (what made flantune/assets/demo_chat_tokenizer):
  python tools/train_chat_tokenizer.py --examples 30000 --vocab_size 8000 \
      --output flantune/assets/demo_chat_tokenizer

Text: the rendered inputs and targets of the first ``--examples`` slots of the demo and
held-out mixtures, plus every message of the shipped example files. Special tokens: <pad> (id
0), <s>, </s>, <unk> and the control tokens of the ChatML and Llama-3 templates; the tokenizer's
chat_template is flantune's Llama-2 template.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from train_vocabulary import mixture_texts  # noqa: E402

from flantune.data.chat.templates import LLAMA2  # noqa: E402
from flantune.data.hf_tokenizer_training import train_hf_tokenizer  # noqa: E402


def example_texts() -> Iterator[str]:
    """Every string field of the shipped example records (messages included)."""
    from flantune.tasks.examples import DATA_DIR

    def strings(value):
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for item in value.values():
                yield from strings(item)
        elif isinstance(value, list):
            for item in value:
                yield from strings(item)

    for path in sorted(DATA_DIR.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                yield from strings(json.loads(line))


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=30_000)
    parser.add_argument("--vocab_size", type=int, default=8000)
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    importlib.import_module("flantune.tasks")

    def texts() -> Iterator[str]:
        for name in ("demo", "demo_heldout"):
            yield from mixture_texts(name, args.examples)
        yield from example_texts()

    path = train_hf_tokenizer(texts(), args.output, vocab_size=args.vocab_size,
                              chat_template=LLAMA2.source)
    print(path)
    return path


if __name__ == "__main__":
    main()
