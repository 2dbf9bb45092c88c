"""SentencePiece vocabularies: the configured default, loading a user's file, training a new one.

Tasks are registered when their module is imported, usually before the command line has been
parsed. Their output features therefore point at :class:`ConfiguredVocabulary`, which reads the
vocabulary file chosen by configuration (gin, or :func:`set_vocabulary`) when it is first used.
"""

from __future__ import annotations

import functools
import importlib.resources
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import sentencepiece as spm
import seqio

from flantune.data.errors import DataError

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2


@functools.cache
def demo_vocabulary_path() -> str:
    """The SentencePiece model shipped with flantune, trained on the demo mixture's text."""
    return str(importlib.resources.files("flantune") / "assets" / "demo_spm.model")


_configured = {"path": None, "extra_ids": 0}


def set_vocabulary(path: str | os.PathLike | None, extra_ids: int = 0) -> None:
    """Chooses the vocabulary file every flantune task uses (None = the shipped demo vocabulary).

    A real T5 ``spiece.model`` works too; pass ``extra_ids=100`` to reproduce T5's 32,100 ids.
    """
    if path is not None:
        check_vocabulary_file(str(path))
    _configured["path"] = None if path is None else str(path)
    _configured["extra_ids"] = int(extra_ids)


def configured_vocabulary_path() -> str:
    return _configured["path"] or demo_vocabulary_path()


def check_vocabulary_file(path: str) -> None:
    """Raises a DataError unless ``path`` is a loadable SentencePiece model with T5 ids."""
    if not Path(path).is_file():
        problem = "is a directory, not a file" if Path(path).is_dir() else "does not exist"
        raise DataError(
            f"Vocabulary file '{path}' {problem}. Point the vocabulary at a SentencePiece "
            "model file (e.g. --gin.flantune.vocabulary.path=\"'/path/spiece.model'\"), or "
            "train one with tools/train_vocabulary.py."
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


class ConfiguredVocabulary(seqio.SentencePieceVocabulary):
    """The SentencePiece vocabulary chosen by configuration, resolved when first used."""

    def __init__(self):
        super().__init__(sentencepiece_model_file="", extra_ids=0)

    def _model_context(self):
        path, extra_ids = configured_vocabulary_path(), _configured["extra_ids"]
        if self._model is None or (path, extra_ids) != (self._sentencepiece_model_file,
                                                        self._extra_ids):
            check_vocabulary_file(path)
            self._sentencepiece_model_file = path
            self._extra_ids = extra_ids
            self._model = None
        return super()._model_context()

    @property
    def sentencepiece_model_file(self) -> str:
        return configured_vocabulary_path()

    def __eq__(self, other) -> bool:
        return isinstance(other, ConfiguredVocabulary) or super().__eq__(other)

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
