"""Writing a Hugging Face tokenizer a run trained with beside its export, with the chat
template the run rendered its conversations in, so `AutoTokenizer.from_pretrained(dir)` and
`apply_chat_template` give transformers users the tokens flantune trained on.

The tokenizer.json is copied as it is; tokenizer_config.json is the source's with the run's
chat template. The export is loaded back with transformers and checked: every probe text must
encode as flantune encodes it, and the template must be the one given.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from flantune.data.hf_vocabulary import (
    CHAT_TEMPLATE_FILE,
    CONFIG_FILE,
    SPECIAL_TOKENS_FILE,
    TOKENIZER_FILE,
    HfTokenizerVocabulary,
)
from flantune.models.convert.checkpoint import TokenIds
from flantune.models.convert.errors import CheckpointError
from flantune.models.convert.tokenizer import PROBE_TEXTS


def hf_token_ids(vocabulary: HfTokenizerVocabulary, stop_id: int | None) -> TokenIds:
    """The ids of a run tokenized by a Hugging Face tokenizer: its sequences start with the
    text's own first token (the template's BOS), so nothing is put before a prompt; generation
    stops at `stop_id` (a chat template's end of turn), else at the tokenizer's EOS."""
    eos = stop_id if stop_id is not None else vocabulary.eos_id
    if eos is None:
        raise CheckpointError(f"the tokenizer {vocabulary!r} has no eos_token; set one in its "
                              f"{CONFIG_FILE}")
    return TokenIds(pad=vocabulary.pad_id, eos=eos, bos=vocabulary.bos_id)


def save_hf_tokenizer(vocabulary: HfTokenizerVocabulary, directory: str | Path, *,
                      chat_template: str | None = None, vocab_size: int | None = None,
                      texts: Sequence[str] = ()) -> list[Path]:
    """Writes the tokenizer files into `directory` after checking them in a scratch directory
    (see the module docstring); returns the files."""
    if vocab_size is not None and vocabulary.vocab_size > vocab_size:
        raise CheckpointError(
            f"the tokenizer {vocabulary!r} has {vocabulary.vocab_size} ids, more than the "
            f"model's vocab_size {vocab_size}: it is not the tokenizer the model was trained "
            "with; pass the right one with --vocabulary")
    config = dict(vocabulary.config)
    config.setdefault("tokenizer_class", "PreTrainedTokenizerFast")
    for key, token in vocabulary.special_tokens.items():
        config[key] = token
    template = chat_template or vocabulary.chat_template
    config.pop("chat_template", None)
    if template is not None:
        config["chat_template"] = template
    source = Path(vocabulary.directory)
    with tempfile.TemporaryDirectory(prefix="flantune-tokenizer-") as scratch:
        shutil.copyfile(vocabulary.path, Path(scratch) / TOKENIZER_FILE)
        if (source / SPECIAL_TOKENS_FILE).is_file():
            shutil.copyfile(source / SPECIAL_TOKENS_FILE, Path(scratch) / SPECIAL_TOKENS_FILE)
        (Path(scratch) / CONFIG_FILE).write_text(
            json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        _check(scratch, vocabulary, template, [*PROBE_TEXTS, *texts])
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CHAT_TEMPLATE_FILE).unlink(missing_ok=True)
        written = []
        for file in sorted(Path(scratch).iterdir()):
            shutil.copyfile(file, directory / file.name)
            written.append(directory / file.name)
    return written


def _check(directory: str, vocabulary: HfTokenizerVocabulary, template: str | None,
           texts: Sequence[str]) -> None:
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    for text in texts:
        want = list(vocabulary.encode(text))
        got = loaded(text, add_special_tokens=False)["input_ids"]
        if got != want:
            raise CheckpointError(
                f"the exported tokenizer encodes {text[:200]!r} as {got[:40]}, but flantune as "
                f"{want[:40]}; no tokenizer was written")
    if template is not None and loaded.chat_template != template:
        raise CheckpointError("the exported tokenizer does not carry the run's chat template; "
                              "no tokenizer was written")
