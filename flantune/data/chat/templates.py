"""Chat templates as data: a Jinja source, the token that ends an assistant turn, and a name.

The built-ins render exactly what the models' own Hugging Face templates render (Llama-2-chat,
Mistral-instruct and its earlier template without a system role, ChatML, Llama-3-instruct;
tests/data/chat compares the tokens with transformers' ``apply_chat_template`` on the official
template strings). They differ from the
official strings only by ``{% generation %}`` blocks around the assistant text, which define
the loss mask; transformers reads the same blocks (``return_assistant_tokens_mask``), so an
exported tokenizer carries them unchanged. Any other Hugging Face template works through
:func:`template_from_tokenizer`; without generation blocks its assistant turns are found by
rendering the conversation turn by turn (see :mod:`flantune.data.chat.encoding`).
"""

from __future__ import annotations

import dataclasses

from flantune.data.chat.jinja import compile_template, has_generation_blocks
from flantune.data.errors import DataError, UnknownNameError


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
    """A chat template.

    Attributes:
      name: a label for messages and reports.
      source: the Jinja template, in Hugging Face's conventions (``messages``,
        ``add_generation_prompt``, ``bos_token``/``eos_token`` variables).
      end_of_turn: the token that ends an assistant turn; decoding stops there. None: the
        tokenizer's EOS token.
      required_tokens: tokens the template writes that must be single tokens of the tokenizer
        (else they would be encoded as text pieces and the model would never see them whole).
      system_role: whether a conversation may start with a system message.
    """

    name: str
    source: str
    end_of_turn: str | None = None
    required_tokens: tuple[str, ...] = ()
    system_role: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source.strip():
            raise DataError(f"chat template '{self.name}' has an empty source.")
        compile_template(self.source)  # a syntax error is reported now, naming the line

    @property
    def marks_generation(self) -> bool:
        """Whether assistant text is marked by ``{% generation %}`` blocks."""
        return has_generation_blocks(self.source)


def _lines(*parts: str) -> str:
    """A template written a block per argument, joined with nothing between them (so no
    whitespace rule of Jinja's is involved)."""
    return "".join(parts)


_ALTERNATE = ("{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
              "{{ raise_exception('Conversation roles must alternate "
              "user/assistant/user/assistant/...') }}{% endif %}")

LLAMA2 = ChatTemplate(
    name="llama2",
    source=_lines(
        "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
        "{% set system_message = messages[0]['content'] %}{% else %}"
        "{% set loop_messages = messages %}{% set system_message = false %}{% endif %}",
        "{% for message in loop_messages %}",
        _ALTERNATE,
        "{% if loop.index0 == 0 and system_message != false %}"
        r"{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}"
        "{% else %}{% set content = message['content'] %}{% endif %}",
        "{% if message['role'] == 'user' %}"
        "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
        "{% elif message['role'] == 'assistant' %}{{ ' ' }}{% generation %}"
        "{{ content.strip() + ' ' + eos_token }}{% endgeneration %}{% endif %}",
        "{% endfor %}"),
)

MISTRAL = ChatTemplate(
    name="mistral",
    source=_lines(
        "{% if messages[0]['role'] == 'system' %}"
        "{% set system_message = messages[0]['content'] %}{% set loop_messages = messages[1:] %}"
        "{% else %}{% set loop_messages = messages %}{% endif %}",
        "{{ bos_token }}",
        "{% for message in loop_messages %}",
        "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('After the optional system message, conversation roles must "
        "alternate user/assistant/user/assistant/...') }}{% endif %}",
        "{% if message['role'] == 'user' %}"
        "{% if loop.first and system_message is defined %}"
        r"{{ ' [INST] ' + system_message + '\n\n' + message['content'] + ' [/INST]' }}"
        "{% else %}{{ ' [INST] ' + message['content'] + ' [/INST]' }}{% endif %}"
        "{% elif message['role'] == 'assistant' %}{{ ' ' }}{% generation %}"
        "{{ message['content'] + eos_token }}{% endgeneration %}"
        "{% else %}{{ raise_exception('Only user and assistant roles are supported, with the "
        "exception of an initial optional system message!') }}{% endif %}",
        "{% endfor %}"),
)

# Mistral-7B-Instruct-v0.2's template before its update (v0.1's puts a space after each EOS):
# no system role.
MISTRAL_LEGACY = ChatTemplate(
    name="mistral_legacy",
    source=_lines(
        "{{ bos_token }}",
        "{% for message in messages %}",
        _ALTERNATE,
        "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
        "{% elif message['role'] == 'assistant' %}{% generation %}"
        "{{ message['content'] + eos_token }}{% endgeneration %}"
        "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}"
        "{% endif %}",
        "{% endfor %}"),
    system_role=False,
)

CHATML = ChatTemplate(
    name="chatml",
    source=_lines(
        "{% for message in messages %}",
        r"{{ '<|im_start|>' + message['role'] + '\n' }}",
        "{% if message['role'] == 'assistant' %}{% generation %}"
        "{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
        "{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}",
        r"{{ '\n' }}",
        "{% endfor %}",
        r"{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"),
    end_of_turn="<|im_end|>",
    required_tokens=("<|im_start|>", "<|im_end|>"),
)

LLAMA3 = ChatTemplate(
    name="llama3",
    source=_lines(
        "{% for message in messages %}",
        r"{% set header = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' %}",
        "{% if loop.index0 == 0 %}{% set header = bos_token + header %}{% endif %}",
        "{{ header }}",
        "{% if message['role'] == 'assistant' %}{% generation %}"
        "{{ message['content'] | trim + '<|eot_id|>' }}{% endgeneration %}"
        "{% else %}{{ message['content'] | trim + '<|eot_id|>' }}{% endif %}",
        "{% endfor %}",
        "{% if add_generation_prompt %}"
        r"{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"),
    end_of_turn="<|eot_id|>",
    required_tokens=("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
)

_TEMPLATES: dict[str, ChatTemplate] = {t.name: t for t in (LLAMA2, MISTRAL, MISTRAL_LEGACY, CHATML,
                                                             LLAMA3)}

# The name that means "the tokenizer's own chat_template".
TOKENIZER_TEMPLATE = "tokenizer"


def register_chat_template(template: ChatTemplate, *, overwrite: bool = False) -> None:
    """Makes ``template`` selectable by its name."""
    if template.name == TOKENIZER_TEMPLATE:
        raise DataError(f"'{TOKENIZER_TEMPLATE}' is reserved: it selects the tokenizer's own "
                        "chat_template.")
    if template.name in _TEMPLATES and not overwrite:
        raise DataError(f"chat template '{template.name}' is already registered; pass "
                        "overwrite=True to replace it.")
    _TEMPLATES[template.name] = template


def chat_template_names() -> list[str]:
    return sorted(_TEMPLATES)


def get_chat_template(name: str | ChatTemplate) -> ChatTemplate:
    """A registered template by name (templates pass through)."""
    if isinstance(name, ChatTemplate):
        return name
    try:
        return _TEMPLATES[name]
    except KeyError:
        raise UnknownNameError(
            f"unknown chat template '{name}'; built-in and registered templates: "
            f"{', '.join(chat_template_names())}, or '{TOKENIZER_TEMPLATE}' for the "
            "tokenizer's own chat_template.") from None


def template_from_tokenizer(vocabulary) -> ChatTemplate:
    """The chat template a Hugging Face tokenizer ships (``tokenizer_config.json``'s
    ``chat_template`` or ``chat_template.jinja``)."""
    source = getattr(vocabulary, "chat_template", None)
    if not source:
        raise DataError(
            f"The tokenizer {vocabulary!r} has no chat_template (tokenizer_config.json or "
            "chat_template.jinja); choose a built-in one: "
            f"{', '.join(chat_template_names())}.")
    return ChatTemplate(name=f"{TOKENIZER_TEMPLATE}:{getattr(vocabulary, 'directory', '?')}",
                        source=source)
