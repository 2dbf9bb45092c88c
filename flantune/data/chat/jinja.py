"""Chat templates rendered as transformers renders them, with the assistant spans they mark.

transformers compiles a ``chat_template`` in a jinja2 ``ImmutableSandboxedEnvironment`` with
``trim_blocks`` and ``lstrip_blocks``, the ``loopcontrols`` extension, a ``{% generation %}``
block tag, a ``tojson`` filter that does not escape HTML, and the globals ``raise_exception``,
``strftime_now``, ``dict`` and ``namespace`` (transformers/utils/chat_template_utils.py). The
same environment is built here so that a Hub template renders to the same text; it is written
out rather than imported because transformers is not a dependency of flantune.

``{% generation %} ... {% endgeneration %}`` blocks mark the text a model generates (assistant
turns); :func:`render` returns their character spans, which become the loss mask.
"""

from __future__ import annotations

import contextvars
import datetime
import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.utils
from jinja2.sandbox import ImmutableSandboxedEnvironment

from flantune.data.errors import TemplateError

_spans: contextvars.ContextVar[list | None] = contextvars.ContextVar("generation_spans",
                                                                     default=None)


class GenerationSpans(jinja2.ext.Extension):
    """The ``{% generation %}`` tag: records where in the output each block's text lands."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.CallBlock:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_record", []), [], [], body
                                      ).set_lineno(lineno)

    def _record(self, caller: Any) -> str:
        text = caller()
        tracking = _spans.get()
        if tracking is not None:
            blocks, spans = tracking
            start = sum(len(b) for b in blocks)
            spans.append((start, start + len(text)))
        return text


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: Any = None, sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(fmt)


class _TemplateDict:
    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
        return dict.fromkeys(*args, **kwargs)


class _Namespace(jinja2.utils.Namespace):
    """jinja's namespace without underscore attributes (as transformers' sandbox)."""

    def __init__(*args: Any, **kwargs: Any):  # noqa: N805 - jinja's own signature trick
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _Namespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _Namespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(
                f"chat templates cannot store underscore attributes on a namespace ({name!r})")


@functools.lru_cache(maxsize=64)
def compile_template(source: str) -> jinja2.Template:
    """The compiled template (cached by source); a syntax error names its line."""
    environment = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True,
        extensions=[GenerationSpans, jinja2.ext.loopcontrols])
    environment.filters["tojson"] = _tojson
    environment.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now,
                               dict=_TemplateDict(), namespace=_Namespace)
    try:
        return environment.from_string(source)
    except jinja2.exceptions.TemplateSyntaxError as err:
        raise TemplateError(f"chat template: Jinja syntax error on line {err.lineno}: "
                            f"{err.message}") from None


@functools.lru_cache(maxsize=64)
def has_generation_blocks(source: str) -> bool:
    """Whether the template marks assistant text with ``{% generation %}`` blocks."""
    environment = compile_template(source).environment
    for node in environment.parse(source).find_all(jinja2.nodes.CallBlock):
        called = getattr(node.call, "node", None)
        if isinstance(called, jinja2.nodes.ExtensionAttribute) and called.name == "_record":
            return True
    return False


def render(source: str, messages: Sequence[Mapping[str, Any]], *,
           add_generation_prompt: bool = False, variables: Mapping[str, Any] | None = None
           ) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its generation blocks.

    ``variables`` are the template's other inputs (the tokenizer's special tokens such as
    ``bos_token``, as transformers passes them). A template's ``raise_exception`` becomes a
    :class:`TemplateError` with its message.
    """
    template = compile_template(source)
    blocks: list[str] = []
    spans: list[tuple[int, int]] = []
    token = _spans.set((blocks, spans))
    try:
        for block in template.generate(messages=[dict(m) for m in messages], tools=None,
                                       documents=None, add_generation_prompt=add_generation_prompt,
                                       **dict(variables or {})):
            blocks.append(block)
    except jinja2.exceptions.TemplateError as err:
        raise TemplateError(f"chat template: {err}") from None
    finally:
        _spans.reset(token)
    return "".join(blocks), spans
