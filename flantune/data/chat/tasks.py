"""``@flantune.chat_task``: whole conversations in a chat template, registered as SeqIO tasks.

A chat task's function returns the records of one split in the canonical
``{"messages": [...]}`` shape (a record source with one of the ``*_messages`` formats of
:mod:`flantune.data.chat.conversations`). Each record becomes one training sequence: the
conversation rendered by the template and tokenized by the Hugging Face tokenizer, with the
loss on the assistant turns (``loss``). For decoder-only models; encoder-decoder models keep the
FLAN-style one-example-per-turn rendering (the ``sharegpt`` / ``oasst`` formats and
``DIALOG_TEMPLATES``).

Examples handed to the feature converter follow the causal-LM convention of Hugging Face
(the model reads token ``t`` and predicts ``t + 1``): ``targets`` are the tokens after the
first, ``decoder_start`` is the first token, ``loss_weights`` the mask on ``targets`` and
``turn_ends`` the lengths at which ``targets`` may be cut without splitting an assistant turn.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import seqio
import tensorflow as tf

from flantune.data.chat.conversations import conversation_of
from flantune.data.chat.encoding import (
    LOSS_MODES,
    EncodedConversation,
    encode_conversation,
    encode_prompt,
    end_of_turn_id,
    hf_vocabulary,
)
from flantune.data.chat.templates import (
    TOKENIZER_TEMPLATE,
    ChatTemplate,
    get_chat_template,
    template_from_tokenizer,
)
from flantune.data.errors import DataError, RecordError
from flantune.data.formats import ASSISTANT, SYSTEM
from flantune.data.tasks import RecordDataSource, RecordFn, RecordTask, SourceFn
from flantune.data.vocabulary import DEFAULT_VOCABULARY

_VALID_NAME = re.compile(r"^[\w.:]+$")
_configured: dict[str, Any] = {"template": TOKENIZER_TEMPLATE, "loss": "assistant_only"}


def set_chat_template(name: str | ChatTemplate) -> None:
    """The template of every chat task that names none (default: the tokenizer's own)."""
    if name != TOKENIZER_TEMPLATE:
        get_chat_template(name)
    _configured["template"] = name


def configured_chat_template() -> str | ChatTemplate:
    return _configured["template"]


def set_chat_loss(loss: str) -> None:
    """The loss of every chat task that names none: "assistant_only" (default), "last_turn"
    or "all"."""
    if loss not in LOSS_MODES:
        raise DataError(f"Unknown chat loss '{loss}'; use one of {LOSS_MODES}.")
    _configured["loss"] = loss


def resolve_chat_template(template: str | ChatTemplate | None, vocabulary: Any
                          ) -> ChatTemplate:
    """A task's template: its own (a template or a name), ``"tokenizer"`` (the vocabulary's
    own), or for None the configured one (gin ``flantune.chat_template.name``)."""
    chosen = template if template is not None else configured_chat_template()
    if chosen == TOKENIZER_TEMPLATE:
        return template_from_tokenizer(hf_vocabulary(vocabulary))
    return get_chat_template(chosen)


@dataclasses.dataclass(eq=False)
class ChatTask(RecordTask):
    """A task of whole conversations (see the module docstring).

    Attributes:
      template: a chat template, its name, ``"tokenizer"`` (the tokenizer's own), or None for
        the configured one (gin ``flantune.chat_template.name``).
      loss: ``"assistant_only"``, ``"last_turn"`` or ``"all"``; None for the configured one
        (gin ``flantune.chat_template.loss``, default ``"assistant_only"``).
      system_prompt: put before conversations that have no system message (None: nothing).
      vocabulary: a Hugging Face tokenizer vocabulary (default: the configured vocabulary).
    """

    name: str
    source_fn: SourceFn
    splits: tuple[str, ...] = ("train", "validation")
    record_fn: RecordFn | None = None
    template: str | ChatTemplate | None = None
    loss: str | None = None
    system_prompt: str | None = None
    vocabulary: seqio.Vocabulary = DEFAULT_VOCABULARY
    postprocess_fn: Callable | None = None
    metric_fns: tuple[Callable, ...] = ()
    seed: int = 0
    description: str = ""

    def __post_init__(self) -> None:
        self._init_records()
        if self.loss is not None and self.loss not in LOSS_MODES:
            raise DataError(f"Chat task '{self.name}': unknown loss '{self.loss}'; use one of "
                            f"{LOSS_MODES}.")

    @property
    def output_features(self) -> dict[str, seqio.Feature]:
        return {"targets": seqio.Feature(vocabulary=self.vocabulary, add_eos=False,
                                         dtype=tf.int32)}

    def chat_template(self) -> ChatTemplate:
        """The template this task renders with (resolved when used: gin may choose it)."""
        return resolve_chat_template(self.template, self.vocabulary)

    @property
    def loss_mode(self) -> str:
        """The loss this task trains with (resolved when used: gin may choose it)."""
        return self.loss if self.loss is not None else _configured["loss"]

    def end_of_turn_id(self) -> int:
        return end_of_turn_id(self.chat_template(), hf_vocabulary(self.vocabulary))

    # -- conversations ----------------------------------------------------------------------
    def messages(self, split: str, index: int) -> list[dict[str, str]]:
        """The checked messages of record ``index`` (with the system prompt, if any)."""
        record = self.record(split, index)
        try:
            messages = conversation_of(record)
        except RecordError as err:
            raise RecordError(str(err), path=self.source(split).where(index),
                              task=self.name) from None
        if self.system_prompt is not None and messages[0]["role"] != SYSTEM:
            messages.insert(0, {"role": SYSTEM, "content": self.system_prompt})
        return messages

    def encode(self, split: str, index: int) -> EncodedConversation:
        """Record ``index`` rendered, tokenized and masked; a conversation with no token to
        train on is a RecordError naming it."""
        where = self.source(split).where(index)
        try:
            encoded = encode_conversation(self.chat_template(), self.vocabulary,
                                          self.messages(split, index), loss=self.loss_mode)
        except RecordError:
            raise
        except DataError as err:
            raise DataError(f"[task '{self.name}', {where}] {err}") from None
        if not encoded.loss_mask[1:].any():  # the first token is never predicted
            raise RecordError(
                f"the conversation has no token to train on with loss='{self.loss_mode}' (its "
                "assistant turns are empty or the template marks none); fix the record or the "
                "template", path=where, task=self.name)
        return encoded

    def example(self, split: str, index: int) -> dict[str, Any]:
        """The converter's example of record ``index`` (see the module docstring)."""
        encoded = self.encode(split, index)
        weights = encoded.loss_mask[1:]
        where = self.source(split).where(index)
        # A cut at a turn's end keeps that turn whole, end token included; a cut inside a turn
        # keeps its end-of-turn token (turn_stops), the last one of the turn if it has none.
        stop_id = self.end_of_turn_id()
        turns = [(start, end) for start, end in encoded.turns if end > 1]
        stops = []
        for start, end in turns:
            found = np.flatnonzero(encoded.tokens[start:end] == stop_id)
            stops.append(start + int(found[-1]) if found.size else end - 1)
        return {"targets": encoded.tokens[1:], "loss_weights": weights.astype(np.int32),
                "decoder_start": int(encoded.tokens[0]),
                "turn_ends": np.asarray([end - 1 for _, end in turns], np.int64),
                "turn_stops": np.asarray([stop - 1 for stop in stops], np.int64),
                "record": where}

    def prompt_and_answer(self, split: str, index: int) -> tuple[str, np.ndarray, str]:
        """For evaluation: the conversation up to its last assistant turn rendered with the
        generation prompt, its tokens, and the last assistant message (the reference)."""
        messages = self.messages(split, index)
        last = max(i for i, m in enumerate(messages) if m["role"] == ASSISTANT)
        text, tokens = encode_prompt(self.chat_template(), self.vocabulary, messages[:last])
        return text, tokens, messages[last]["content"]


class ChatDataSource(RecordDataSource):
    """A seqio DataSource of a chat task's tokenized conversations: ``targets`` (all tokens of
    the conversation, as ``apply_chat_template`` gives them) and ``loss_weights`` (the mask).

    For SeqIO's own pipelines; SeqIO's feature converters put BOS 0 before the targets and do
    not read ``loss_weights``. flantune's batches read :meth:`ChatTask.example` instead (the
    causal-LM convention, the mask, the turn boundaries)."""

    def _signature(self) -> dict[str, tf.TensorSpec]:
        return {"targets": tf.TensorSpec((None,), tf.int32),
                "loss_weights": tf.TensorSpec((None,), tf.int32)}

    def _example(self, split: str, index: int) -> dict[str, Any]:
        encoded = self._task.encode(split, index)
        return {"targets": encoded.tokens, "loss_weights": encoded.loss_mask}


_CHAT_TASKS: dict[str, ChatTask] = {}


def chat_task_for(name: str) -> ChatTask | None:
    """The chat task registered as ``name``, or None."""
    return _CHAT_TASKS.get(name)


def registered_chat_tasks() -> list[ChatTask]:
    return list(_CHAT_TASKS.values())


def register_chat_task(chat_task: ChatTask) -> ChatTask:
    """Registers ``chat_task`` as a seqio Task of its name."""
    name = chat_task.name
    if name in seqio.TaskRegistry.names():
        previous = _CHAT_TASKS.get(name)
        if previous is None or (previous.source_fn.__qualname__
                                != chat_task.source_fn.__qualname__):
            raise DataError(f"Task '{name}' is already registered; pick another name for "
                            f"'{chat_task.source_fn.__qualname__}'.")
        seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(name, source=ChatDataSource(chat_task), preprocessors=[],
                           output_features=chat_task.output_features,
                           postprocess_fn=chat_task.postprocess_fn,
                           metric_fns=list(chat_task.metric_fns))
    _CHAT_TASKS[name] = chat_task
    return chat_task


def check_registration(name: str, template: str | ChatTemplate | None) -> None:
    """A task name SeqIO accepts and a known template (an unknown one fails at registration)."""
    if not _VALID_NAME.match(name):
        raise DataError(f"Task name '{name}' is not valid for SeqIO: use letters, digits, "
                        "'_', ':' and '.' only.")
    if template is not None and template != TOKENIZER_TEMPLATE:
        get_chat_template(template)


def chat_task(name: str, *, splits: Sequence[str] = ("train", "validation"),
              template: str | ChatTemplate | None = None, loss: str | None = None,
              system_prompt: str | None = None, record_fn: RecordFn | None = None,
              vocabulary: seqio.Vocabulary | None = None,
              postprocess_fn: Callable | None = None, metric_fns: Sequence[Callable] = (),
              seed: int = 0) -> Callable[[SourceFn], ChatTask]:
    """Registers the decorated ``fn(split)`` as a chat task (see :class:`ChatTask`)."""
    check_registration(name, template)

    def decorate(fn: SourceFn) -> ChatTask:
        task = ChatTask(name=name, source_fn=fn, splits=tuple(splits), record_fn=record_fn,
                        template=template, loss=loss, system_prompt=system_prompt,
                        vocabulary=vocabulary or DEFAULT_VOCABULARY,
                        postprocess_fn=postprocess_fn, metric_fns=tuple(metric_fns), seed=seed,
                        description=(fn.__doc__ or "").strip().split("\n")[0])
        return register_chat_task(task)

    return decorate

