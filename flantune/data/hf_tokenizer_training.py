"""Training a Hugging Face tokenizer (``tokenizers``) offline, saved as transformers saves one.

Two kinds: ``"byte_level"`` (GPT-2 / Llama-3 style byte-level BPE: every string encodes, no
unknown token) and ``"bpe"`` (SentencePiece-style BPE over ``▁``-marked words, with an
``<unk>`` for characters never seen in training). The special tokens come first, so ``<pad>``
is id 0 (flantune pads with 0). The directory written holds ``tokenizer.json`` and a
``tokenizer_config.json`` naming the special tokens and, if given, the ``chat_template``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from flantune.data.errors import DataError
from flantune.data.hf_vocabulary import CONFIG_FILE, TOKENIZER_FILE

KINDS = ("byte_level", "bpe")
BASE_SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")
# The control tokens of the built-in ChatML and Llama-3 templates.
CHAT_SPECIAL_TOKENS = ("<|im_start|>", "<|im_end|>", "<|begin_of_text|>",
                       "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")


def train_hf_tokenizer(texts: Iterable[str], output_dir: str | os.PathLike, *,
                       vocab_size: int = 8000, kind: str = "byte_level",
                       special_tokens: Sequence[str] = BASE_SPECIAL_TOKENS + CHAT_SPECIAL_TOKENS,
                       bos_token: str | None = "<s>", eos_token: str = "</s>",
                       chat_template: str | None = None) -> str:
    """Trains a tokenizer on ``texts`` and writes it to ``output_dir``; returns the directory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if kind not in KINDS:
        raise DataError(f"Unknown tokenizer kind '{kind}'; use one of {KINDS}.")
    special = list(dict.fromkeys(["<pad>", *special_tokens]))
    for token in (bos_token, eos_token):
        if token is not None and token not in special:
            raise DataError(f"bos/eos token {token!r} must be one of the special tokens.")
    if kind == "byte_level":
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False)
    else:
        unk = "<unk>" if "<unk>" in special else None
        tokenizer = Tokenizer(models.BPE(unk_token=unk))
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁",
                                                           prepend_scheme="first")
        tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special,
                                      show_progress=False)
    texts = list(texts)
    if not texts:
        raise DataError("train_hf_tokenizer got no text to train on.")
    tokenizer.train_from_iterator(texts, trainer=trainer)
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(output / TOKENIZER_FILE))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "<pad>",
              "eos_token": eos_token, "clean_up_tokenization_spaces": False,
              "model_max_length": 1_000_000}
    if bos_token is not None:
        config["bos_token"] = bos_token
    if kind == "bpe" and "<unk>" in special:
        config["unk_token"] = "<unk>"
    if chat_template is not None:
        config["chat_template"] = chat_template
    (output / CONFIG_FILE).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n",
                                      encoding="utf-8")
    return str(output)
