"""``@flantune.preference_task``: preference pairs (prompt, chosen, rejected) as SeqIO tasks.

A preference task's function returns the records of one split (a record source with format
``preference`` or ``hh_preference``, or canonical records; see
:mod:`flantune.data.preference.records`). Each record becomes a pair of token sequences,
prompt + chosen and prompt + rejected, tokenized as TRL's ``DPOTrainer`` does:

- conversational records through the chat template: the prompt rendered with the generation
  prompt, each whole conversation rendered with its completion (what ``apply_chat_template``
  gives, as for chat tasks);
- standard records as ``tokenizer(text)`` gives them (with the special tokens a Hugging Face
  tokenizer's post-processor adds, e.g. Llama's BOS; none for SentencePiece), the completions
  ending with EOS.

The completion starts where the tokenized prompt and prompt + completion first differ (TRL's
rule: a template or a merge across the boundary may re-tokenize the prompt's end); the loss is on
the completion's tokens. For decoder-only models, in the causal-LM convention of chat tasks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import seqio
import tensorflow as tf

from flantune.data.chat.encoding import encode_conversation, encode_prompt, hf_vocabulary
from flantune.data.chat.tasks import check_registration, resolve_chat_template
from flantune.data.chat.templates import ChatTemplate
from flantune.data.errors import DataError, RecordError
from flantune.data.formats import SYSTEM
from flantune.data.hf_vocabulary import HfTokenizerVocabulary
from flantune.data.preference.records import is_conversational, preference_of
from flantune.data.tasks import RecordDataSource, RecordFn, RecordTask, SourceFn
from flantune.data.vocabulary import DEFAULT_VOCABULARY


@dataclasses.dataclass(frozen=True)
class EncodedPair:
    """A preference record tokenized: the two whole sequences and where the completion starts
    (the same in both: their first ``prompt_length`` tokens are the prompt)."""

    chosen: np.ndarray
    rejected: np.ndarray
    prompt_length: int


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    differ = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(differ[0]) if differ.size else n


@dataclasses.dataclass(eq=False)
class PreferenceTask(RecordTask):
    """A task of preference pairs (see the module docstring).

    Attributes:
      template: for conversational records: a chat template, its name, ``"tokenizer"``, or None
        for the configured one (gin ``flantune.chat_template.name``).
      system_prompt: put before conversational prompts that have no system message.
      vocabulary: default the configured vocabulary.
    """

    name: str
    source_fn: SourceFn
    splits: tuple[str, ...] = ("train", "validation")
    record_fn: RecordFn | None = None
    template: str | ChatTemplate | None = None
    system_prompt: str | None = None
    vocabulary: seqio.Vocabulary = DEFAULT_VOCABULARY
    seed: int = 0
    description: str = ""

    def __post_init__(self) -> None:
        self._init_records()

    @property
    def output_features(self) -> dict[str, seqio.Feature]:
        return {name: seqio.Feature(vocabulary=self.vocabulary, add_eos=False, dtype=tf.int32)
                for name in ("chosen", "rejected")}

    def chat_template(self) -> ChatTemplate:
        return resolve_chat_template(self.template, self.vocabulary)

    def pair(self, split: str, index: int) -> dict[str, Any]:
        """The checked canonical record ``index`` (with the system prompt, if any)."""
        where = self.source(split).where(index)
        try:
            record = preference_of(self.record(split, index))
        except RecordError as err:
            if err.path is not None:
                raise
            raise RecordError(str(err), path=where, task=self.name) from None
        if self.system_prompt is not None and not is_conversational(record):
            raise RecordError("the task has a system_prompt, which only a conversational pair "
                              "(message lists) can hold; this record is text: put the system "
                              "text into its prompt, or give the task message records",
                              path=where, task=self.name)
        if (self.system_prompt is not None and is_conversational(record)
                and record["prompt"][0]["role"] != SYSTEM):
            record["prompt"] = [{"role": SYSTEM, "content": self.system_prompt},
                                *record["prompt"]]
        return record

    def encode(self, split: str, index: int) -> EncodedPair:
        """Record ``index`` tokenized (see the module docstring)."""
        record = self.pair(split, index)
        where = self.source(split).where(index)
        try:
            if is_conversational(record):
                prompt, chosen, rejected = self._conversation_tokens(record)
            else:
                prompt, chosen, rejected = self._text_tokens(record)
        except RecordError:
            raise
        except DataError as err:
            raise DataError(f"[task '{self.name}', {where}] {err}") from None
        length = min(common_prefix_length(prompt, chosen), common_prefix_length(prompt, rejected))
        for name, tokens in (("chosen", chosen), ("rejected", rejected)):
            # The first token is never predicted: a completion needs a token after it.
            if tokens.size <= max(length, 1):
                raise RecordError(f"the {name} completion has no token to train on (the prompt "
                                  f"is {length} tokens, prompt + {name} {tokens.size})",
                                  path=where, task=self.name)
        if np.array_equal(chosen, rejected):
            raise RecordError("chosen and rejected tokenize identically, so the pair states no "
                              "preference", path=where, task=self.name)
        return EncodedPair(chosen=chosen, rejected=rejected, prompt_length=length)

    def _conversation_tokens(self, record: dict[str, Any]):
        template = self.chat_template()
        _, prompt = encode_prompt(template, self.vocabulary, record["prompt"])
        chosen = encode_conversation(template, self.vocabulary,
                                     record["prompt"] + record["chosen"]).tokens
        rejected = encode_conversation(template, self.vocabulary,
                                       record["prompt"] + record["rejected"]).tokens
        return prompt, chosen, rejected

    def _text_tokens(self, record: dict[str, Any]):
        vocabulary = self.vocabulary
        resolved = vocabulary.resolved() if hasattr(vocabulary, "resolved") else vocabulary
        eos = resolved.eos_id
        if eos is None:
            raise DataError(f"the completions end with EOS, but the vocabulary {resolved!r} has "
                            "none; set eos_token in the tokenizer's tokenizer_config.json")

        def encode(text: str) -> np.ndarray:
            if isinstance(resolved, HfTokenizerVocabulary):
                return np.asarray(resolved.encode_with_special_tokens(text), np.int32)
            return np.asarray(resolved.encode(text), np.int32)

        def with_eos(tokens: np.ndarray) -> np.ndarray:
            return tokens if tokens.size and tokens[-1] == eos else np.r_[tokens, eos].astype(
                np.int32)

        prompt = encode(record["prompt"])
        chosen = with_eos(encode(record["prompt"] + record["chosen"]))
        rejected = with_eos(encode(record["prompt"] + record["rejected"]))
        return prompt, chosen, rejected

    def example(self, split: str, index: int) -> dict[str, Any]:
        """The pair converter's example of record ``index``."""
        encoded = self.encode(split, index)
        return {"chosen": encoded.chosen, "rejected": encoded.rejected,
                "prompt_length": encoded.prompt_length,
                "record": self.source(split).where(index)}

    def rendered(self, split: str, index: int) -> dict[str, Any]:
        """For inspection: the pair's texts and tokens."""
        record = self.pair(split, index)
        encoded = self.encode(split, index)
        vocabulary = self.vocabulary
        decode = (hf_vocabulary(vocabulary).decode if is_conversational(record)
                  and isinstance(getattr(vocabulary, "resolved", lambda: vocabulary)(),
                                 HfTokenizerVocabulary) else vocabulary.decode)
        return {"prompt": decode(encoded.chosen[:encoded.prompt_length].tolist()),
                "chosen": decode(encoded.chosen[encoded.prompt_length:].tolist()),
                "rejected": decode(encoded.rejected[encoded.prompt_length:].tolist()),
                "prompt_tokens": encoded.prompt_length,
                "chosen_tokens": int(encoded.chosen.size - encoded.prompt_length),
                "rejected_tokens": int(encoded.rejected.size - encoded.prompt_length),
                "template": (self.chat_template().name if is_conversational(record)
                             else "(text)"), "variant": "preference", "num_exemplars": 0}


class PreferenceDataSource(RecordDataSource):
    """A seqio DataSource of a preference task's tokenized pairs: ``chosen`` and ``rejected``
    (whole sequences) and ``prompt_length``, for SeqIO's own pipelines; flantune's batches read
    :meth:`PreferenceTask.example`."""

    def _signature(self) -> dict[str, tf.TensorSpec]:
        return {"chosen": tf.TensorSpec((None,), tf.int32),
                "rejected": tf.TensorSpec((None,), tf.int32),
                "prompt_length": tf.TensorSpec((), tf.int32)}

    def _example(self, split: str, index: int) -> dict[str, Any]:
        encoded = self._task.encode(split, index)
        return {"chosen": encoded.chosen, "rejected": encoded.rejected,
                "prompt_length": np.int32(encoded.prompt_length)}


_PREFERENCE_TASKS: dict[str, PreferenceTask] = {}


def preference_task_for(name: str) -> PreferenceTask | None:
    """The preference task registered as ``name``, or None."""
    return _PREFERENCE_TASKS.get(name)


def register_preference_task(task: PreferenceTask) -> PreferenceTask:
    """Registers ``task`` as a seqio Task of its name."""
    name = task.name
    if name in seqio.TaskRegistry.names():
        previous = _PREFERENCE_TASKS.get(name)
        if previous is None or previous.source_fn.__qualname__ != task.source_fn.__qualname__:
            raise DataError(f"Task '{name}' is already registered; pick another name for "
                            f"'{task.source_fn.__qualname__}'.")
        seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(name, source=PreferenceDataSource(task), preprocessors=[],
                           output_features=task.output_features)
    _PREFERENCE_TASKS[name] = task
    return task


def preference_task(name: str, *, splits: Sequence[str] = ("train", "validation"),
                    template: str | ChatTemplate | None = None,
                    system_prompt: str | None = None, record_fn: RecordFn | None = None,
                    vocabulary: seqio.Vocabulary | None = None, seed: int = 0):
    """Registers the decorated ``fn(split)`` as a preference task (see
    :class:`PreferenceTask`)."""
    check_registration(name, template)

    def decorate(fn: SourceFn) -> PreferenceTask:
        task = PreferenceTask(name=name, source_fn=fn, splits=tuple(splits),
                              record_fn=record_fn, template=template,
                              system_prompt=system_prompt,
                              vocabulary=vocabulary or DEFAULT_VOCABULARY, seed=seed,
                              description=(fn.__doc__ or "").strip().split("\n")[0])
        return register_preference_task(task)

    return decorate
