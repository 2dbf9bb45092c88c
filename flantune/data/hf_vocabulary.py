"""A ``seqio.Vocabulary`` over a Hugging Face ``tokenizer.json`` (the ``tokenizers`` library).

SeqIO has SentencePiece vocabularies only (seqio #188); modern decoders ship a fast
tokenizer: ``tokenizer.json`` plus ``tokenizer_config.json`` (special tokens, chat template).
:class:`HfTokenizerVocabulary` reads both and encodes and decodes as transformers'
``PreTrainedTokenizerFast`` does: ``encode`` is ``tokenizer(text, add_special_tokens=False)``
(SeqIO's contract: no EOS is added here, the task's feature adds it), ``decode`` is
``tokenizer.decode(ids, skip_special_tokens=True)`` through the first EOS, with the config's
``clean_up_tokenization_spaces`` applied as transformers applies it.

flantune pads with id 0, so id 0 must not be a token that ordinary text encodes to: it must be
a special token (``<pad>``, ``<unk>``, ...). A tokenizer whose id 0 is a regular piece (GPT-2 and
Llama-3 byte-level vocabularies: id 0 is ``!``) is refused with that explanation.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import seqio
import tensorflow as tf

from flantune.data.errors import DataError

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token")

# transformers' `clean_up_tokenization` (tokenization_utils_base.py), applied when the config
# asks for it and the model is not BPE, as transformers does.
_CLEAN_UP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
             (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def is_hf_tokenizer_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a tokenizer.json file or a directory holding one."""
    path = Path(path)
    return path.suffix == ".json" or (path.is_dir() and (path / TOKENIZER_FILE).is_file())


def _token_text(value: Any) -> str | None:
    """A special token as written in a config: a string or an AddedToken dict."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as err:
        raise DataError(f"Cannot read tokenizer file '{path}': {err}.") from None
    if not isinstance(data, dict):
        raise DataError(f"Tokenizer file '{path}' is not a JSON object.")
    return data


class HfTokenizerVocabulary(seqio.Vocabulary):
    """A Hugging Face fast tokenizer as a SeqIO vocabulary.

    Args:
      path: a directory with ``tokenizer.json`` (and usually ``tokenizer_config.json``), or the
        ``tokenizer.json`` file itself (its directory's config files are read if present).
    """

    def __init__(self, path: str | os.PathLike):
        super().__init__(extra_ids=0)
        path = Path(path)
        directory = path if path.is_dir() else path.parent
        file = path / TOKENIZER_FILE if path.is_dir() else path
        if not file.is_file():
            raise DataError(
                f"No Hugging Face tokenizer at '{path}': '{file}' does not exist. Point "
                "flantune.vocabulary.path at a tokenizer.json file or a directory holding one "
                "(what tokenizer.save_pretrained writes).")
        self.path, self.directory = str(file), str(directory)
        from tokenizers import Tokenizer

        try:
            self._tokenizer = Tokenizer.from_file(str(file))
        except Exception as err:  # noqa: BLE001 - the tokenizers library raises plain Exception
            raise DataError(f"'{file}' is not a Hugging Face tokenizer.json ({err}).") from None
        self.config: dict[str, Any] = {}
        if (directory / CONFIG_FILE).is_file():
            self.config = _read_json(directory / CONFIG_FILE)
        special_map = (_read_json(directory / SPECIAL_TOKENS_FILE)
                       if (directory / SPECIAL_TOKENS_FILE).is_file() else {})
        self.special_tokens: dict[str, str] = {}
        for key in SPECIAL_TOKEN_KEYS:
            text = _token_text(self.config.get(key, special_map.get(key)))
            if text is not None:
                if self._tokenizer.token_to_id(text) is None:
                    raise DataError(f"Tokenizer '{directory}': its {key} {text!r} is not a token "
                                    f"of {file.name}; fix {CONFIG_FILE}.")
                self.special_tokens[key] = text
        self.chat_template = self._read_chat_template(directory)
        # transformers' `split_special_tokens`: special-token strings in text encode as text.
        self._tokenizer.encode_special_tokens = bool(self.config.get("split_special_tokens",
                                                                     False))
        self._clean_up = bool(self.config.get("clean_up_tokenization_spaces", False)) and (
            type(self._tokenizer.model).__name__ != "BPE"
            or self.config.get(
                "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output", False))
        self._check_padding_id()

    def _read_chat_template(self, directory: Path) -> str | None:
        """The default chat template: ``chat_template.jinja`` or the config's field (a string,
        or a list of named templates whose "default" is taken)."""
        if (directory / CHAT_TEMPLATE_FILE).is_file():
            return (directory / CHAT_TEMPLATE_FILE).read_text(encoding="utf-8")
        template = self.config.get("chat_template")
        if isinstance(template, list):
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, Mapping)}
            template = named.get("default")
        return template if isinstance(template, str) else None

    def _check_padding_id(self) -> None:
        token = self._tokenizer.id_to_token(0)
        ends = {self.special_tokens.get("bos_token"), self.special_tokens.get("eos_token")}
        if token in ends:
            role = "EOS" if token == self.special_tokens.get("eos_token") else "BOS"
            raise DataError(
                f"Tokenizer '{self.path}': id 0 is its {role} token {token!r}, but flantune "
                "pads with id 0 (as SeqIO and t5x do), so every sequence would end (or start) "
                "with padding. Use a tokenizer whose id 0 is a pad or unk token.")
        special = {t.content for t in self._tokenizer.get_added_tokens_decoder().values()
                   if t.special}
        unk = getattr(self._tokenizer.model, "unk_token", None)
        if token is None or token in special or token == unk or token in \
                self.special_tokens.values():
            return
        raise DataError(
            f"Tokenizer '{self.path}': id 0 is the ordinary token {token!r}, but flantune pads "
            "with id 0 (as SeqIO and t5x do), so text containing it would be read as padding. "
            "Use a tokenizer whose id 0 is a special token such as <pad> or <unk>.")

    # -- ids --------------------------------------------------------------------------------
    def token_id(self, token: str) -> int | None:
        """The id of a token string (special tokens included), or None."""
        return self._tokenizer.token_to_id(token)

    def token(self, token_id: int) -> str | None:
        """The token string of an id, or None."""
        return self._tokenizer.id_to_token(int(token_id))

    def _special_id(self, key: str) -> int | None:
        text = self.special_tokens.get(key)
        return None if text is None else self._tokenizer.token_to_id(text)

    @property
    def bos_id(self) -> int | None:
        return self._special_id("bos_token")

    @property
    def eos_id(self) -> int | None:
        return self._special_id("eos_token")

    @property
    def unk_id(self) -> int | None:
        return self._special_id("unk_token")

    @property
    def pad_id(self) -> int:
        return 0

    @functools.cached_property
    def special_ids(self) -> frozenset[int]:
        """Ids of the tokenizer's special added tokens (what ``skip_special_tokens`` drops)."""
        return frozenset(i for i, t in self._tokenizer.get_added_tokens_decoder().items()
                         if t.special)

    @property
    def _base_vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    # -- text -------------------------------------------------------------------------------
    def _encode(self, s: str) -> Sequence[int]:
        return self._tokenizer.encode(s, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of many texts at once (the tokenizers library's batched, threaded path)."""
        return [e.ids for e in self._tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def encode_with_special_tokens(self, text: str) -> list[int]:
        """Token ids as ``tokenizer(text)`` gives them: with the special tokens the tokenizer's
        post-processor adds (e.g. Llama's BOS)."""
        return self._tokenizer.encode(text, add_special_tokens=True).ids

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids of ``text`` and each token's character span in it."""
        encoding = self._tokenizer.encode(text, add_special_tokens=False)
        return encoding.ids, list(encoding.offsets)

    def _decode(self, ids: Sequence[int]) -> str:
        text = self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)
        if self._clean_up:
            for old, new in _CLEAN_UP:
                text = text.replace(old, new)
        return text

    def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
        def encode(text: Any) -> Any:
            return np.asarray(self._encode(np.asarray(text).item().decode("utf-8")), np.int32)

        ids = tf.numpy_function(encode, [s], tf.int32, stateful=False)
        ids.set_shape([None])
        return ids

    def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
        def decode(array: Any) -> Any:
            rows = np.asarray(array).reshape(-1, np.shape(array)[-1])
            texts = [self._decode([int(i) for i in row if int(i) != self.pad_id]).encode("utf-8")
                     for row in rows]
            return np.asarray(texts, dtype=object).reshape(np.shape(array)[:-1])

        text = tf.numpy_function(decode, [ids], tf.string, stateful=False)
        text.set_shape(ids.shape[:-1])
        return text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HfTokenizerVocabulary) and other.path == self.path

    def __hash__(self) -> int:
        return hash((HfTokenizerVocabulary, self.path))

    def __repr__(self) -> str:
        return f"HfTokenizerVocabulary({self.directory!r})"
