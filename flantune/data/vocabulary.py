"""Vocabularies: the configured default (SentencePiece or a Hugging Face tokenizer), loading a
user's file, training a new SentencePiece model.

Tasks are registered when their module is imported, usually before the command line has been
parsed. Their output features therefore point at :class:`ConfiguredVocabulary`, which reads the
vocabulary file chosen by configuration (gin, or :func:`set_vocabulary`) when it is first used.
"""

from __future__ import annotations

import functools
import importlib.resources
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import sentencepiece as spm
import seqio

from flantune.data.errors import DataError
from flantune.data.hf_vocabulary import HfTokenizerVocabulary, is_hf_tokenizer_path

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2


@functools.cache
def demo_vocabulary_path() -> str:
    """The SentencePiece model shipped with flantune, trained on the demo mixture's text."""
    return str(importlib.resources.files("flantune") / "assets" / "demo_spm.model")


@functools.cache
def demo_chat_tokenizer_path() -> str:
    """The Hugging Face tokenizer shipped for the chat demo (byte-level BPE on the demo's text,
    Llama-2 chat template; made by tools/train_chat_tokenizer.py)."""
    return str(importlib.resources.files("flantune") / "assets" / "demo_chat_tokenizer")


# Names for the vocabularies shipped with flantune, usable wherever a vocabulary path is.
SHIPPED = {"flantune:demo": demo_vocabulary_path, "flantune:demo_chat": demo_chat_tokenizer_path}


def resolve_vocabulary_path(path: str | os.PathLike) -> str:
    """``path``, or the file a shipped vocabulary's name (``flantune:demo_chat``) stands for."""
    text = str(path)
    if text.startswith("flantune:"):
        if text not in SHIPPED:
            raise DataError(f"Unknown shipped vocabulary '{text}'; the shipped ones are "
                            f"{sorted(SHIPPED)}.")
        return SHIPPED[text]()
    return text


_configured = {"path": None, "extra_ids": 0}


def set_vocabulary(path: str | os.PathLike | None, extra_ids: int = 0) -> None:
    """Chooses the vocabulary every flantune task uses (None = the shipped demo vocabulary).

    ``path`` is a SentencePiece ``.model`` file, or a Hugging Face ``tokenizer.json`` (or the
    directory holding it, with its ``tokenizer_config.json``). A real T5 ``spiece.model`` works
    too; pass ``extra_ids=100`` to reproduce T5's 32,100 ids.
    """
    if path is not None:
        path = resolve_vocabulary_path(path)
        if is_hf_tokenizer_path(path):
            if extra_ids:
                raise DataError(f"extra_ids={extra_ids} applies to SentencePiece models only; a "
                                f"Hugging Face tokenizer ('{path}') lists all its tokens itself.")
            _hf_vocabulary(str(path))  # checked now, so a bad path fails at configuration
        else:
            check_vocabulary_file(str(path))
    _configured["path"] = None if path is None else str(path)
    _configured["extra_ids"] = int(extra_ids)


def configured_vocabulary_path() -> str:
    return _configured["path"] or demo_vocabulary_path()


@functools.lru_cache(maxsize=8)
def _hf_vocabulary(path: str) -> HfTokenizerVocabulary:
    return HfTokenizerVocabulary(path)


@functools.lru_cache(maxsize=8)
def _sentencepiece_vocabulary(path: str, extra_ids: int) -> seqio.SentencePieceVocabulary:
    check_vocabulary_file(path)
    return seqio.SentencePieceVocabulary(path, extra_ids=extra_ids)


def configured_vocabulary() -> seqio.Vocabulary:
    """The vocabulary configuration chooses: SentencePiece or a Hugging Face tokenizer."""
    path = configured_vocabulary_path()
    if is_hf_tokenizer_path(path):
        return _hf_vocabulary(path)
    return _sentencepiece_vocabulary(path, _configured["extra_ids"])


def check_vocabulary_file(path: str) -> None:
    """Raises a DataError unless ``path`` is a loadable SentencePiece model with T5 ids."""
    if not Path(path).is_file():
        problem = "is a directory, not a file" if Path(path).is_dir() else "does not exist"
        raise DataError(
            f"Vocabulary file '{path}' {problem}. Point the vocabulary at a SentencePiece "
            "model file (e.g. --gin.flantune.vocabulary.path=\"'/path/spiece.model'\"), a "
            "Hugging Face tokenizer.json or its directory, or train one with "
            "tools/train_vocabulary.py."
        )
    processor = spm.SentencePieceProcessor()
    try:
        processor.LoadFromSerializedProto(Path(path).read_bytes())
    except (RuntimeError, OSError) as err:
        raise DataError(
            f"Vocabulary file '{path}' is not a SentencePiece model ({err}). Use the .model file "
            "written by SentencePiece (not the .vocab text file)."
        ) from None
    if processor.pad_id() != PAD_ID or processor.eos_id() != EOS_ID:
        raise DataError(
            f"Vocabulary '{path}' has pad id {processor.pad_id()} and eos id "
            f"{processor.eos_id()}; flantune (like T5) needs pad 0 and eos 1. Retrain it with "
            "tools/train_vocabulary.py."
        )


def encode_batch(vocabulary: seqio.Vocabulary, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of many texts (batched in C++ for SentencePiece and Hugging Face tokenizers)."""
    if isinstance(vocabulary, ConfiguredVocabulary):
        vocabulary = vocabulary.resolved()
    if isinstance(vocabulary, HfTokenizerVocabulary):
        return vocabulary.encode_batch(texts)
    tokenizer = getattr(vocabulary, "tokenizer", None)
    if tokenizer is not None:
        return tokenizer.encode(list(texts))  # extra ids never occur in plain text
    return [list(vocabulary.encode(text)) for text in texts]


class ConfiguredVocabulary(seqio.Vocabulary):
    """The vocabulary chosen by configuration, resolved when used (tasks are registered before
    the command line is parsed): a SentencePiece model or a Hugging Face tokenizer."""

    def __init__(self):
        super().__init__(extra_ids=0)

    def resolved(self) -> seqio.Vocabulary:
        """The vocabulary configured now."""
        return configured_vocabulary()

    def describe(self) -> str:
        """The configured file, for messages."""
        return configured_vocabulary_path()

    @property
    def sentencepiece_model_file(self) -> str:
        vocabulary = self.resolved()
        if not isinstance(vocabulary, seqio.SentencePieceVocabulary):
            raise DataError(f"The configured vocabulary '{self.describe()}' is a Hugging Face "
                            "tokenizer, not a SentencePiece model.")
        return vocabulary.sentencepiece_model_file

    @property
    def tokenizer(self):
        """The SentencePiece processor (None for a Hugging Face tokenizer)."""
        return getattr(self.resolved(), "tokenizer", None)

    @property
    def extra_ids(self) -> int:
        return self.resolved().extra_ids

    @property
    def bos_id(self) -> int | None:
        return self.resolved().bos_id

    @property
    def eos_id(self) -> int | None:
        return self.resolved().eos_id

    @property
    def unk_id(self) -> int | None:
        return self.resolved().unk_id

    @property
    def pad_id(self) -> int:
        return self.resolved().pad_id

    @property
    def vocab_size(self) -> int:
        return self.resolved().vocab_size

    @property
    def _base_vocab_size(self) -> int:
        return self.resolved()._base_vocab_size

    def _encode(self, s: str) -> Sequence[int]:
        return self.resolved().encode(s)

    def _decode(self, ids):
        return self.resolved()._decode(ids)

    def decode(self, ids):
        return self.resolved().decode(ids)

    def _encode_tf(self, s):
        return self.resolved().encode_tf(s)

    def _decode_tf(self, ids):
        return self.resolved()._decode_tf(ids)

    def decode_tf(self, ids):
        return self.resolved().decode_tf(ids)

    def __repr__(self) -> str:
        return f"ConfiguredVocabulary({self.describe()!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, ConfiguredVocabulary) or self.resolved() == other

    def __hash__(self) -> int:
        return hash(ConfiguredVocabulary)


DEFAULT_VOCABULARY = ConfiguredVocabulary()


def default_output_features() -> dict[str, seqio.Feature]:
    """``inputs`` and ``targets`` over the configured vocabulary, each ending in EOS."""
    return {
        "inputs": seqio.Feature(vocabulary=DEFAULT_VOCABULARY, add_eos=True, required=False),
        "targets": seqio.Feature(vocabulary=DEFAULT_VOCABULARY, add_eos=True),
    }


def train_vocabulary(texts: Iterable[str], output_prefix: str | os.PathLike, *,
                     vocab_size: int = 8000, model_type: str = "unigram",
                     character_coverage: float = 0.9999, num_threads: int = 2) -> str:
    """Trains a SentencePiece model with T5's conventions and returns the ``.model`` path.

    pad 0, eos 1, unk 2 and no bos (T5's ids); byte fallback so no character maps to unk;
    newlines kept as their own piece (the default normalizer would turn them into spaces).
    """
    output_prefix = str(output_prefix)
    Path(output_prefix).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        count = 0
        for text in texts:
            # The trainer reads one sentence per line. "\n" is a user-defined piece, matched
            # whole at encoding time whatever the training text held, so it needs no statistics.
            f.write(text.replace("\n", " ") + "\n")
            count += 1
        corpus = f.name
    if count == 0:
        raise DataError("train_vocabulary got no text to train on.")
    try:
        with open(os.devnull, "w") as quiet:
            spm.SentencePieceTrainer.train(
                input=corpus, model_prefix=output_prefix, vocab_size=vocab_size,
                model_type=model_type, character_coverage=character_coverage,
                pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1,
                byte_fallback=True, user_defined_symbols=["\n"], remove_extra_whitespaces=False,
                input_sentence_size=2_000_000, shuffle_input_sentence=True,
                num_threads=num_threads, minloglevel=2, logstream=quiet,
            )
    except RuntimeError as err:
        raise DataError(f"SentencePiece could not train a {vocab_size}-piece vocabulary on "
                        f"{count} texts: {str(err).splitlines()[-1]} (byte fallback alone takes "
                        "256 pieces; use a smaller vocab_size or more varied text).") from None
    finally:
        os.unlink(corpus)
    return output_prefix + ".model"
