"""Hugging Face tokenizers for the chat tests, made offline: trained by `tokenizers` on the
demo's text (byte-level BPE and SentencePiece-style BPE), and converted from the demo's
SentencePiece model by flantune's exporter (transformers' SentencePiece conversion)."""

from __future__ import annotations

import json
from pathlib import Path

from flantune.data.hf_tokenizer_training import train_hf_tokenizer
from flantune.data.vocabulary import demo_vocabulary_path

TEXTS = [
    *(f"Question {i}: what is {i} plus {i * 3}?\nAnswer: {i * 4}." for i in range(1500)),
    *("The quick brown fox jumps over the lazy dog. Don't panic; it's fine!",
      "Reverse the word lantern: nretnal.", "A spinach and feta omelette, please.",
      "How is William related to Liam? He is his father.") * 40,
]


def trained(directory: Path, kind: str, vocab_size: int = 600) -> str:
    """A tokenizer of `kind` trained on TEXTS (with the chat control tokens)."""
    return train_hf_tokenizer(TEXTS, directory, vocab_size=vocab_size, kind=kind)


def converted(directory: Path) -> str:
    """The demo SentencePiece model as a Hugging Face tokenizer (Unigram, T5 ids), with `<s>`
    added as BOS (the demo model has none) so the Llama-2 template can be rendered."""
    from flantune.models.convert.tokenizer import save_tokenizer

    save_tokenizer(demo_vocabulary_path(), directory, add_eos=False)
    tokenizer = json.loads((directory / "tokenizer.json").read_text())
    top = max(t["id"] for t in tokenizer["added_tokens"])
    for offset, token in enumerate(("<s>", "<|im_start|>", "<|im_end|>"), start=1):
        tokenizer["added_tokens"].append({
            "id": max(top, 7999) + offset, "content": token, "single_word": False,
            "lstrip": False, "rstrip": False, "normalized": False, "special": True})
    (directory / "tokenizer.json").write_text(json.dumps(tokenizer))
    config = json.loads((directory / "tokenizer_config.json").read_text())
    config.pop("added_tokens_decoder", None)
    config.update(bos_token="<s>", tokenizer_class="PreTrainedTokenizerFast")
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return str(directory)
