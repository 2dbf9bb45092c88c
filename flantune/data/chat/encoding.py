"""A conversation -> its template's tokens, the loss mask and where each assistant turn lies.

The tokens are what transformers' ``apply_chat_template(messages, tokenize=True)`` gives: the
whole rendered text encoded at once, without added special tokens. The assistant turns come from
the template, never from searching the rendered text:

- a template with ``{% generation %}`` blocks marks them itself (the built-ins do);
- otherwise each assistant turn is what rendering it adds: the text between the conversation
  up to the turn rendered with ``add_generation_prompt=True`` and the conversation including
  it. A template that does not render conversations as such prefixes is refused.

A token trains when it overlaps an assistant span (transformers' ``assistant_masks`` rule).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import jinja2.meta
import numpy as np

from flantune.data.chat.jinja import compile_template, render
from flantune.data.chat.templates import ChatTemplate
from flantune.data.errors import DataError
from flantune.data.formats import ASSISTANT
from flantune.data.hf_vocabulary import SPECIAL_TOKEN_KEYS, HfTokenizerVocabulary

LOSS_MODES = ("assistant_only", "last_turn", "all")


@dataclasses.dataclass(frozen=True)
class EncodedConversation:
    """A rendered and tokenized conversation.

    Attributes:
      text: the rendered conversation.
      tokens: [n] int32 token ids.
      loss_mask: [n] int32, 1 on the tokens the loss is on.
      turns: the [start, end) token range of each assistant turn, in order.
    """

    text: str
    tokens: np.ndarray
    loss_mask: np.ndarray
    turns: tuple[tuple[int, int], ...]


def hf_vocabulary(vocabulary: Any) -> HfTokenizerVocabulary:
    """The Hugging Face tokenizer behind ``vocabulary`` (the configured one resolved); chat
    templates need one, since they write special tokens as text."""
    resolved = vocabulary.resolved() if hasattr(vocabulary, "resolved") else vocabulary
    if not isinstance(resolved, HfTokenizerVocabulary):
        raise DataError(
            f"Chat templates need a Hugging Face tokenizer (tokenizer.json), whose special "
            f"tokens such as '</s>' or '<|im_end|>' encode as single ids; the vocabulary is "
            f"{resolved!r}. Set flantune.vocabulary.path to a tokenizer directory (the demo: "
            "flantune/assets/demo_chat_tokenizer).")
    return resolved


def template_variables(vocabulary: HfTokenizerVocabulary) -> dict[str, str]:
    """What transformers passes a template besides the messages: the special tokens map."""
    return dict(vocabulary.special_tokens)


@functools.lru_cache(maxsize=64)
def _undeclared(source: str) -> frozenset[str]:
    environment = compile_template(source).environment
    return frozenset(jinja2.meta.find_undeclared_variables(environment.parse(source)))


def check_template_tokens(template: ChatTemplate, vocabulary: HfTokenizerVocabulary) -> None:
    """Raises a DataError when the template needs a special token the tokenizer lacks."""
    used = _undeclared(template.source)
    missing = [k for k in SPECIAL_TOKEN_KEYS if k in used and k not in vocabulary.special_tokens]
    wanted = [*template.required_tokens, *([template.end_of_turn] if template.end_of_turn
                                             else [])]
    absent = [t for t in wanted if vocabulary.token_id(t) is None
              or list(vocabulary.encode(t)) != [vocabulary.token_id(t)]]
    if missing or absent:
        parts = ([f"special token(s) {missing} (not set in tokenizer_config.json)"] if missing
                 else []) + ([f"token(s) {sorted(set(absent))}"] if absent else [])
        raise DataError(f"Chat template '{template.name}' writes {' and '.join(parts)} that the "
                        f"tokenizer {vocabulary!r} does not have as single tokens; add them as "
                        "special tokens to the tokenizer or choose another template.")


@functools.lru_cache(maxsize=64)
def _inferred_end_of_turn(source: str, vocabulary: HfTokenizerVocabulary) -> str | None:
    """The last special token a template writes inside an assistant turn (a Hub template
    names no end-of-turn token: ChatML's is <|im_end|>, often not the tokenizer's EOS)."""
    probe = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    try:
        text, spans = assistant_spans(ChatTemplate("probe", source), probe,
                                      template_variables(vocabulary))
    except DataError:
        return None
    if not spans:
        return None
    ids, offsets = vocabulary.encode_with_offsets(text)
    low, high = spans[-1]
    inside = [i for i, (a, b) in zip(ids, offsets, strict=True)
              if b > low and a < high and i in vocabulary.special_ids]
    return vocabulary.token(inside[-1]) if inside else None


def end_of_turn_id(template: ChatTemplate, vocabulary: HfTokenizerVocabulary) -> int:
    """The id decoding stops at: the template's end-of-turn token, else the last special token
    its assistant turns end with, else the tokenizer's EOS."""
    token = (template.end_of_turn or _inferred_end_of_turn(template.source, vocabulary)
             or vocabulary.special_tokens.get("eos_token"))
    token_id = None if token is None else vocabulary.token_id(token)
    if token_id is None:
        raise DataError(f"Chat template '{template.name}' names no end-of-turn token and the "
                        f"tokenizer {vocabulary!r} has no eos_token: decoding could not stop.")
    return token_id


def _check_system_role(template: ChatTemplate, messages: Sequence[Mapping[str, str]]) -> None:
    if not template.system_role and messages and messages[0]["role"] == "system":
        raise DataError(f"Chat template '{template.name}' has no system role, but the "
                        "conversation starts with a system message; drop it or choose a "
                        "template with one.")


def assistant_spans(template: ChatTemplate, messages: Sequence[Mapping[str, str]],
                    variables: Mapping[str, str]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character span of each assistant turn."""
    text, spans = render(template.source, messages, variables=variables)
    assistants = [i for i, m in enumerate(messages) if m["role"] == ASSISTANT]
    if template.marks_generation:
        if len(spans) != len(assistants):
            raise DataError(f"Chat template '{template.name}' marks {len(spans)} generation "
                            f"block(s) for {len(assistants)} assistant message(s); each "
                            "assistant turn needs exactly one {% generation %} block.")
        return text, spans
    spans = []
    for i in assistants:
        before, _ = render(template.source, messages[:i], add_generation_prompt=True,
                           variables=variables)
        upto, _ = render(template.source, messages[:i + 1], variables=variables)
        if not (upto.startswith(before) and text.startswith(upto)):
            raise DataError(
                f"Chat template '{template.name}' does not render a conversation as the "
                f"prefix of its continuation (message {i + 1}), so its assistant turns cannot "
                "be told from the rendering; add {% generation %} ... {% endgeneration %} "
                "around the assistant text of the template.")
        spans.append((len(before), len(upto)))
    return text, spans


def encode_conversation(template: ChatTemplate, vocabulary: Any,
                        messages: Sequence[Mapping[str, str]], *,
                        loss: str = "assistant_only") -> EncodedConversation:
    """Renders and tokenizes a whole conversation with its loss mask (see the module doc).

    ``loss``: ``"assistant_only"`` (every assistant turn), ``"last_turn"`` (the last one) or
    ``"all"`` (every token).
    """
    if loss not in LOSS_MODES:
        raise DataError(f"Unknown chat loss '{loss}'; use one of {LOSS_MODES}.")
    vocabulary = hf_vocabulary(vocabulary)
    check_template_tokens(template, vocabulary)
    _check_system_role(template, messages)
    text, spans = assistant_spans(template, messages, template_variables(vocabulary))
    ids, offsets = vocabulary.encode_with_offsets(text)
    tokens = np.asarray(ids, np.int32)
    starts = np.fromiter((a for a, _ in offsets), np.int64, len(offsets))
    ends = np.fromiter((b for _, b in offsets), np.int64, len(offsets))
    turns = []
    for low, high in spans:
        inside = np.flatnonzero((ends > low) & (starts < high))
        if inside.size:
            turns.append((int(inside[0]), int(inside[-1]) + 1))
    mask = np.zeros(tokens.size, np.int32)
    if loss == "all":
        mask[:] = 1
    else:
        for start, end in turns[-1:] if loss == "last_turn" else turns:
            mask[start:end] = 1
    return EncodedConversation(text=text, tokens=tokens, loss_mask=mask, turns=tuple(turns))


def encode_prompt(template: ChatTemplate, vocabulary: Any,
                  messages: Sequence[Mapping[str, str]]) -> tuple[str, np.ndarray]:
    """The text and tokens a model continues to answer ``messages`` (which end with a user
    turn): rendered with ``add_generation_prompt=True``."""
    vocabulary = hf_vocabulary(vocabulary)
    check_template_tokens(template, vocabulary)
    _check_system_role(template, messages)
    text, _ = render(template.source, messages, add_generation_prompt=True,
                     variables=template_variables(vocabulary))
    return text, np.asarray(vocabulary.encode(text), np.int32)

