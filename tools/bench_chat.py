"""Chat-model data: template parity with transformers, whole conversations vs one example per
turn, and the Hugging Face tokenizer's encode speed.

1. Parity: for each built-in template (and a Hub Jinja template without generation blocks,
   Zephyr's, read from a tokenizer_config.json), >= 200 conversations (the demo's reasoning
   dialogues, the shipped example files as conversations, and random ones with system prompts
   and odd spacing) are tokenized by flantune and by transformers' ``apply_chat_template`` on
   the model's official template (tests/data/chat/official_templates.py) with the shipped demo
   chat tokenizer; a conversation counts as a mismatch if the tokens (or, for the built-ins, the
   assistant masks vs transformers' ``return_assistant_tokens_mask``) differ.
2. Tokens fed for the shipped ShareGPT conversations (tasks/examples/sharegpt_style.jsonl) as
   whole sequences / as one example per assistant turn (each turn with its history as prompt).
3. Batched encode speed of flantune's HfTokenizerVocabulary / transformers' fast tokenizer on the
   same texts, alternating rounds in this process, median of the per-round ratios.

    python tools/bench_chat.py [--conversations 250] [--rounds 5]

The last line is a JSON object of the headline figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import flantune.tasks  # noqa: E402, F401 - registers the demo's chat tasks
from flantune.data.chat import (  # noqa: E402
    CHATML,
    LLAMA2,
    LLAMA3,
    MISTRAL,
    MISTRAL_LEGACY,
    ChatTemplate,
    chat_task_for,
    encode_conversation,
)
from flantune.data.chat.templates import template_from_tokenizer  # noqa: E402
from flantune.data.hf_vocabulary import HfTokenizerVocabulary  # noqa: E402
from flantune.data.vocabulary import demo_chat_tokenizer_path, set_vocabulary  # noqa: E402
from tests.data.chat import official_templates as official  # noqa: E402
from tests.data.chat.conversations_fixture import random_conversations  # noqa: E402


def shipped_conversations() -> list[list[dict[str, str]]]:
    """The demo's chat tasks' conversations: reasoning dialogues and the example files."""
    out = []
    for name in ("chat_sharegpt", "chat_dolly", "chat_alpaca", "chat_reasoning"):
        task = chat_task_for(name)
        for split in task.splits:
            count = min(task.num_records(split), 120)
            out += [task.messages(split, i) for i in range(count)]
    return out


def parity(vocabulary, reference, conversations, count: int) -> dict[str, int]:
    pairs = [(LLAMA2, official.LLAMA2_CHAT), (MISTRAL, official.MISTRAL_INSTRUCT),
             (MISTRAL_LEGACY, official.MISTRAL_INSTRUCT_LEGACY), (CHATML, official.CHATML),
             (LLAMA3, official.LLAMA3_INSTRUCT)]
    mismatches = {}
    for template, source in pairs:
        chosen = [c for c in conversations if template.system_role or c[0]["role"] != "system"]
        chosen = (chosen + random_conversations(count, seed=1, system=template.system_role)
                  )[:count]
        bad = 0
        for messages in chosen:
            ours = encode_conversation(template, vocabulary, messages)
            theirs = reference.apply_chat_template(messages, chat_template=source,
                                                   tokenize=True, return_dict=True)
            masks = reference.apply_chat_template(messages, chat_template=template.source,
                                                  tokenize=True, return_dict=True,
                                                  return_assistant_tokens_mask=True)
            bad += (theirs["input_ids"] != ours.tokens.tolist()
                    or masks["assistant_masks"] != ours.loss_mask.tolist())
        mismatches[template.name] = bad
    zephyr = ChatTemplate("zephyr", official.ZEPHYR)
    chosen = (conversations + random_conversations(count, seed=2))[:count]
    mismatches["zephyr_jinja"] = sum(
        reference.apply_chat_template(m, chat_template=official.ZEPHYR, tokenize=True,
                                      return_dict=True)["input_ids"]
        != encode_conversation(zephyr, vocabulary, m).tokens.tolist() for m in chosen)
    return mismatches


def multi_turn_ratio(vocabulary) -> tuple[float, int, int]:
    task = chat_task_for("chat_sharegpt")
    whole = per_turn = 0
    for split in task.splits:
        for i in range(task.num_records(split)):
            messages = task.messages(split, i)
            whole += encode_conversation(LLAMA2, vocabulary, messages).tokens.size
            for end, message in enumerate(messages, start=1):
                if message["role"] == "assistant":
                    per_turn += encode_conversation(LLAMA2, vocabulary, messages[:end]).tokens.size
    return whole / per_turn, whole, per_turn


def encode_speed(vocabulary, reference, texts, rounds: int) -> float:
    ratios = []
    vocabulary.encode_batch(texts[:100])
    reference(texts[:100], add_special_tokens=False)
    for _ in range(rounds):
        start = time.perf_counter()
        ours = vocabulary.encode_batch(texts)
        mine = time.perf_counter() - start
        start = time.perf_counter()
        theirs = reference(texts, add_special_tokens=False)["input_ids"]
        other = time.perf_counter() - start
        assert ours == theirs
        ratios.append(other / mine)  # speed ratio: flantune's texts/s over transformers'
    return float(np.median(ratios))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=250)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    from transformers import AutoTokenizer

    set_vocabulary("flantune:demo_chat")
    vocabulary = HfTokenizerVocabulary(demo_chat_tokenizer_path())
    reference = AutoTokenizer.from_pretrained(demo_chat_tokenizer_path(), local_files_only=True)
    assert template_from_tokenizer(vocabulary).source == LLAMA2.source
    conversations = shipped_conversations()
    mismatches = parity(vocabulary, reference, conversations, args.conversations)
    for name, bad in mismatches.items():
        print(f"{name:14s} {bad} of {args.conversations} conversations differ from transformers")
    ratio, whole, per_turn = multi_turn_ratio(vocabulary)
    print(f"shipped ShareGPT conversations: {whole} tokens whole, {per_turn} one example per "
          f"assistant turn (ratio {ratio:.3f})")
    texts = [m["content"] for c in conversations for m in c] * 4
    speed = encode_speed(vocabulary, reference, texts, args.rounds)
    print(f"batched encode of {len(texts)} texts: flantune / transformers speed {speed:.3f}")
    print(json.dumps({"chat_template_token_mismatches": int(sum(mismatches.values())),
                      "conversations_per_template": args.conversations,
                      "multi_turn_tokens_ratio_vs_per_turn": round(ratio, 4),
                      "hf_tokenizer_encode_speed_ratio_vs_transformers": round(speed, 3)}))


if __name__ == "__main__":
    main()
