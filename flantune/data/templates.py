"""FLAN-style prompt templates: patterns over record fields, answer options, CoT, inversion.

A :class:`Template` is a pair of ``str.format``-style patterns (``inputs``, ``targets``) over
the fields of a raw record. The special placeholder ``{options_}`` renders the record's
``options`` list in one of several styles; every random choice (template, option style,
option order, CoT answer phrasing) comes from a caller-supplied, seeded generator, so a
rendering is reproducible (FLAN's own option formatting is not).

Rendering is written here rather than with ``str.format``/``string.Formatter.vformat``
because the data layer needs things ``format`` does not do: whitespace tidying around an
empty ``{options_}``, errors that name the task/template/field, and refusing list values.
The pattern *parsing* is still ``string.Formatter.parse``.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from flantune.data.errors import TemplateError

OPTIONS_FIELD = "options"
OPTIONS_PLACEHOLDER = "options_"

_FORMATTER = string.Formatter()
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_SENTENCE_END = (".", "!", "?")
# Field values of these types are refused (only ``options`` may be a list).
_CONTAINERS = (list, tuple, dict, set, frozenset, np.ndarray)


# --------------------------------------------------------------------------- Template


@dataclasses.dataclass(frozen=True)
class Template:
    """One way of turning a record into an (inputs, targets) pair of strings.

    Attributes:
      inputs: pattern over record fields, e.g. ``"Question: {question}\\n{options_}"``.
      targets: pattern over record fields, e.g. ``"{answer}"``.
      name: a label used in results and error messages.
      cot: chain-of-thought: after ``targets`` (the rationale) an answer sentence such as
        "The answer is {answer_field}." is appended, its phrasing drawn from ``rng``.
      answer_field: the field holding the final answer (only used when ``cot``).
      requires_options: the template only makes sense with answer options.
      accepts_options: when False the template is never used in with-options renderings.
      shuffle_options: shuffle the options (seeded) before rendering them.
      requires_nonempty: the template applies only to records where these fields are non-empty.
      requires_empty: the template applies only to records where these fields are empty.
    """

    inputs: str
    targets: str
    name: str = ""
    cot: bool = False
    answer_field: str = "answer"
    requires_options: bool = False
    accepts_options: bool = True
    shuffle_options: bool = False
    requires_nonempty: frozenset[str] = frozenset()
    requires_empty: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "requires_nonempty", _as_field_set(self.requires_nonempty))
        object.__setattr__(self, "requires_empty", _as_field_set(self.requires_empty))
        label = self.label
        input_fields = _pattern_fields(self.inputs, label, "inputs")
        target_fields = _pattern_fields(self.targets, label, "targets")
        if OPTIONS_PLACEHOLDER in target_fields:
            raise TemplateError(f"template {label}: '{{{OPTIONS_PLACEHOLDER}}}' may only appear "
                                "in the inputs pattern, not in targets.")
        if input_fields.count(OPTIONS_PLACEHOLDER) > 1:
            raise TemplateError(f"template {label}: '{{{OPTIONS_PLACEHOLDER}}}' appears more "
                                "than once in the inputs pattern; keep one.")
        if self.requires_options and not self.accepts_options:
            raise TemplateError(f"template {label}: requires_options and accepts_options=False "
                                "contradict each other; set only one.")
        if self.cot and not _FIELD_NAME.match(self.answer_field):
            raise TemplateError(f"template {label}: answer_field {self.answer_field!r} is not "
                                "a valid field name.")
        both = self.requires_empty & self.requires_nonempty
        if both:
            raise TemplateError(f"template {label}: fields {sorted(both)} are required to be "
                                "both empty and non-empty.")

    @property
    def label(self) -> str:
        """The name, or the start of the inputs pattern when unnamed (for messages)."""
        if self.name:
            return f"'{self.name}'"
        head = self.inputs if len(self.inputs) <= 40 else self.inputs[:37] + "..."
        return f"with inputs {head!r}"

    def fields(self) -> frozenset[str]:
        """Record fields the template reads (``options`` and ``{options_}`` excluded)."""
        return _template_fields(self)

    def _compute_fields(self) -> frozenset[str]:
        names = set(_pattern_fields(self.inputs, self.label, "inputs"))
        names.update(_pattern_fields(self.targets, self.label, "targets"))
        names.discard(OPTIONS_PLACEHOLDER)
        if self.cot:
            names.add(self.answer_field)
        names.update(self.requires_nonempty, self.requires_empty)
        return frozenset(names)

    @property
    def reads_options(self) -> bool:
        """Whether the inputs pattern places the options itself via ``{options_}``."""
        return OPTIONS_PLACEHOLDER in _pattern_fields(self.inputs, self.label, "inputs")

    def usable(self, *, with_options: bool) -> bool:
        """Whether the template may be used for a rendering with / without options."""
        return self.accepts_options if with_options else not self.requires_options

    def applies_to(self, record: Mapping[str, Any]) -> bool:
        """Whether the record meets ``requires_empty`` / ``requires_nonempty``."""
        return (all(not _is_empty(record[f]) for f in self.requires_nonempty)
                and all(_is_empty(record[f]) for f in self.requires_empty))


@functools.lru_cache(maxsize=4096)
def _template_fields(template: Template) -> frozenset[str]:
    """``Template.fields``, parsed once per template (rendering checks them per record)."""
    return template._compute_fields()  # noqa: SLF001


def _as_field_set(value: Iterable[str] | str) -> frozenset[str]:
    if isinstance(value, str):  # a bare string would otherwise become a set of characters
        return frozenset([value])
    return frozenset(value)


# One parsed piece of a pattern: (literal text, field name, format spec, conversion).
_Piece = tuple[str, str | None, str | None, str | None]


@functools.lru_cache(maxsize=4096)
def _parse(pattern: str) -> tuple[_Piece, ...]:
    return tuple(_FORMATTER.parse(pattern))


def _pattern_fields(pattern: str, label: str, which: str) -> list[str]:
    """Field names in ``pattern`` in order; rejects positional and attribute/index fields."""
    try:
        pieces = _parse(pattern)
    except ValueError as exc:
        raise TemplateError(f"template {label}: cannot parse the {which} pattern {pattern!r}: "
                            f"{exc}. Write literal braces as '{{{{' and '}}}}'.") from None
    names = []
    for _, field, _, _ in pieces:
        if field is None:
            continue
        if not _FIELD_NAME.match(field):
            raise TemplateError(
                f"template {label}: the {which} pattern names field {{{field}}}; only plain "
                "record field names are allowed (no positional '{}', '.attr' or '[index]').")
        names.append(field)
    return names


def _is_empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, bytes):
        return not value.strip()
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, _CONTAINERS):
        return len(value) == 0
    return False


# --------------------------------------------------------------------------- options


class OptionStyle(enum.Enum):
    """Ways of showing answer options; one is drawn per rendering."""

    DASH_LIST = "dash_list"              # OPTIONS:\n- a\n- b
    LETTERED_INLINE = "lettered_inline"  # (A) a (B) b
    CHOOSE_FROM = "choose_from"          # Choose from: a, b.
    ROMAN_LIST = "roman_list"            # Possible answers:\n[i] a\n[ii] b
    NUMBERED_LIST = "numbered_list"      # Pick one of these:\n1. a\n2. b
    LETTERED_LIST = "lettered_list"      # Answer choices:\nA) a\nB) b


OPTION_STYLES: tuple[OptionStyle, ...] = tuple(OptionStyle)


def option_letter(index: int) -> str:
    """A, B, ..., Z, AA, AB, ... for a 0-based index."""
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = chr(ord("A") + rem) + letters
    return letters


def _roman(number: int) -> str:
    """Lower-case roman numeral for 1 <= number <= 3999."""
    if not 1 <= number <= 3999:
        raise TemplateError(f"cannot number option {number} in roman numerals (1..3999 only); "
                            "use fewer options.")
    out = []
    for value, symbol in ((1000, "m"), (900, "cm"), (500, "d"), (400, "cd"), (100, "c"),
                          (90, "xc"), (50, "l"), (40, "xl"), (10, "x"), (9, "ix"), (5, "v"),
                          (4, "iv"), (1, "i")):
        count, number = divmod(number, value)
        out.append(symbol * count)
    return "".join(out)


def format_options(options: Sequence[str], style: OptionStyle) -> str:
    """Renders ``options`` in the given ``style`` (order kept)."""
    if not options:
        raise TemplateError("cannot render an empty list of options.")
    opts = [str(o) for o in options]
    if style is OptionStyle.DASH_LIST:
        return "OPTIONS:\n" + "\n".join(f"- {o}" for o in opts)
    if style is OptionStyle.LETTERED_INLINE:
        return " ".join(f"({option_letter(i)}) {o}" for i, o in enumerate(opts))
    if style is OptionStyle.CHOOSE_FROM:
        joined = ", ".join(opts)
        return f"Choose from: {joined}" + ("" if joined.endswith(_SENTENCE_END) else ".")
    if style is OptionStyle.ROMAN_LIST:
        return "Possible answers:\n" + "\n".join(
            f"[{_roman(i + 1)}] {o}" for i, o in enumerate(opts))
    if style is OptionStyle.NUMBERED_LIST:
        return "Pick one of these:\n" + "\n".join(f"{i + 1}. {o}" for i, o in enumerate(opts))
    if style is OptionStyle.LETTERED_LIST:
        return "Answer choices:\n" + "\n".join(
            f"{option_letter(i)}) {o}" for i, o in enumerate(opts))
    raise TemplateError(f"unknown option style {style!r}.")


def draw_option_style(rng: np.random.Generator) -> OptionStyle:
    """One style, uniformly at random from ``rng``."""
    return OPTION_STYLES[int(rng.integers(len(OPTION_STYLES)))]


def render_options(options: Sequence[str], rng: np.random.Generator,
                   style: OptionStyle | None = None) -> str:
    """Renders ``options`` in ``style``, or in a style drawn from ``rng`` when None."""
    return format_options(options, style if style is not None else draw_option_style(rng))


# --------------------------------------------------------------------------- CoT


# Phrasings of the closing sentence of a chain-of-thought target; "{}" is the answer.
ANSWER_SENTENCES: tuple[str, ...] = (
    "The answer is {}",
    "So the answer is {}",
    "Therefore, the final answer is {}",
    "Putting it together, the answer is {}",
)
def answer_sentence(answer: str, rng: np.random.Generator) -> str:
    """"The answer is <answer>." in a phrasing drawn from ``rng`` (no doubled full stop)."""
    phrase = ANSWER_SENTENCES[int(rng.integers(len(ANSWER_SENTENCES)))].format(answer)
    return phrase if phrase.endswith(_SENTENCE_END) else phrase + "."


def extract_cot_answer(text: str) -> str | None:
    """The answer stated in the last answer sentence of a CoT output, or None if absent."""
    prefixes = [sentence.split("{}")[0] for sentence in ANSWER_SENTENCES]
    best = max(((text.rfind(p), p) for p in prefixes), key=lambda found: found[0])
    start, prefix = best
    if start < 0:
        return None
    answer = text[start + len(prefix):].strip()
    return answer[:-1].rstrip() if answer.endswith(".") else answer


def cot_template(inputs: str, *, rationale_field: str = "rationale",
                 answer_field: str = "answer", name: str = "",
                 requires_options: bool = False, accepts_options: bool = True) -> Template:
    """A chain-of-thought template: targets are the rationale, then an answer sentence."""
    return Template(inputs=inputs, targets="{" + rationale_field + "}", name=name, cot=True,
                    answer_field=answer_field, requires_options=requires_options,
                    accepts_options=accepts_options)


# --------------------------------------------------------------------------- inversion


def inverted(template: Template, *, instruction: str, context: str = "",
             produce: str | None = None, name: str = "") -> Template:
    """Input inversion (Flan 2022 style): show the original target, ask for the input.

    The new inputs are ``instruction`` (a pattern), ``context`` (a pattern, optional) and
    the original targets pattern, separated by blank lines; the new targets are ``produce``
    or, by default, the single field the original inputs pattern reads. Inverted templates
    never show answer options.
    """
    if template.cot:
        raise TemplateError(f"template {template.label}: cannot invert a chain-of-thought "
                            "template; invert the plain question->answer template instead.")
    if produce is None:
        read = [f for f in _pattern_fields(template.inputs, template.label, "inputs")
                if f != OPTIONS_PLACEHOLDER]
        if len(set(read)) != 1:
            raise TemplateError(
                f"template {template.label}: its inputs read fields {sorted(set(read))}, so "
                "the original input is ambiguous; pass produce='{field}' to inverted().")
        produce = "{" + read[0] + "}"
    inputs = "\n\n".join(p for p in (instruction, context, template.targets) if p)
    return Template(inputs=inputs, targets=produce,
                    name=name or (f"{template.name}_inverted" if template.name else ""),
                    accepts_options=False,
                    requires_nonempty=template.requires_nonempty,
                    requires_empty=template.requires_empty)


# --------------------------------------------------------------------------- rendering


def _where(task: str, template: Template) -> str:
    return (f"task '{task}', " if task else "") + f"template {template.label}"


def check_fields(template: Template, record: Mapping[str, Any], *, task: str = "",
                 with_options: bool = False) -> None:
    """Raises TemplateError if ``record`` lacks a field the template reads."""
    needed = set(template.fields())
    if with_options:
        needed.add(OPTIONS_FIELD)
    missing = sorted(needed - set(record))
    if missing:
        have = ", ".join(sorted(map(str, record))) or "none"
        raise TemplateError(
            f"{_where(task, template)}: the record has no field "
            + ", ".join(f"'{m}'" for m in missing)
            + f" (record fields: {have}). Rename the field in the source or its preprocessor,"
            " or fix the template pattern.")


def _field_text(value: Any, field: str, spec: str, conversion: str | None,
                where: str) -> str:
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TemplateError(f"{where}: field '{field}' holds bytes that are not valid "
                                f"UTF-8 ({exc}); decode it in a preprocessor.") from None
    if isinstance(value, _CONTAINERS):
        raise TemplateError(
            f"{where}: field '{field}' holds a {type(value).__name__}; only '{OPTIONS_FIELD}' "
            "may hold a list (rendered via {options_}). Join it into a string in a "
            "preprocessor.")
    if conversion:
        value = _FORMATTER.convert_field(value, conversion)
    try:
        return format(value, spec) if spec else str(value)
    except (ValueError, TypeError) as exc:
        raise TemplateError(f"{where}: cannot format field '{field}' with spec {spec!r}: "
                            f"{exc}.") from None


def _options_list(record: Mapping[str, Any], where: str) -> list[str]:
    value = record[OPTIONS_FIELD]
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, list | tuple):
        raise TemplateError(f"{where}: field '{OPTIONS_FIELD}' must be a list of strings, "
                            f"got {type(value).__name__}.")
    if not value:
        raise TemplateError(f"{where}: field '{OPTIONS_FIELD}' is an empty list; give at least "
                            "one option or use a variant without options.")
    out = []
    for i, option in enumerate(value):
        if isinstance(option, bytes):
            option = option.decode("utf-8", errors="strict")
        if isinstance(option, _CONTAINERS) or option is None:
            raise TemplateError(f"{where}: option {i} of '{OPTIONS_FIELD}' is "
                                f"{type(option).__name__}, not a string.")
        text = str(option)
        if not text.strip():
            raise TemplateError(f"{where}: option {i} of '{OPTIONS_FIELD}' is empty.")
        out.append(text)
    return out


@functools.lru_cache(maxsize=4096)
def _pieces_without_options(pattern: str) -> tuple[_Piece, ...]:
    """``pattern``'s pieces with ``{options_}`` removed and the whitespace around it tidied.

    Of the gaps before and after the placeholder one is kept: the one with more line breaks
    (the earlier one on a tie); at the start or end of the pattern both are dropped.
    """
    pieces = list(_parse(pattern))
    k = next((i for i, p in enumerate(pieces) if p[1] == OPTIONS_PLACEHOLDER), None)
    if k is None:
        return tuple(pieces)
    before = pieces[k][0]
    rest = pieces[k + 1:]
    if all(field is None and not literal.strip() for literal, field, _, _ in rest):
        return (*pieces[:k], (before.rstrip(), None, None, None))
    after, field, spec, conversion = rest[0]
    if k == 0 and not before.strip():
        merged = after.lstrip()
    else:
        gap_before = before[len(before.rstrip()):]
        gap_after = after[:len(after) - len(after.lstrip())]
        if gap_after.count("\n") > gap_before.count("\n"):
            merged = before.rstrip() + after
        else:
            merged = before + after.lstrip()
    return (*pieces[:k], (merged, field, spec, conversion), *rest[1:])


def _substitute(pattern: str, record: Mapping[str, Any], options_text: str, where: str) -> str:
    """Fills ``pattern``; an empty ``options_text`` drops ``{options_}`` and tidies its gap."""
    pieces = _parse(pattern) if options_text else _pieces_without_options(pattern)
    out: list[str] = []
    for literal, field, spec, conversion in pieces:
        out.append(literal)
        if field is None:
            continue
        if field == OPTIONS_PLACEHOLDER:
            out.append(options_text)
        else:
            out.append(_field_text(record[field], field, spec or "", conversion, where))
    return "".join(out)


def render(template: Template, record: Mapping[str, Any], *, with_options: bool,
           rng: np.random.Generator, option_style: OptionStyle | None = None,
           task: str = "") -> tuple[str, str]:
    """Renders ``record`` with ``template`` into ``(inputs_text, targets_text)``.

    Draws from ``rng`` in a fixed order: option style (when ``with_options`` and no
    ``option_style`` is given), option order (when ``shuffle_options``), CoT phrasing.
    With options and no ``{options_}`` in the pattern, the options are appended after a
    blank line; without options ``{options_}`` renders to nothing.
    """
    where = _where(task, template)
    check_fields(template, record, task=task, with_options=with_options)
    if with_options and not template.accepts_options:
        raise TemplateError(f"{where}: the template does not accept options; render it "
                            "with with_options=False.")
    if not with_options and template.requires_options:
        raise TemplateError(f"{where}: the template requires options; render it with "
                            "with_options=True.")
    options_text = ""
    if with_options:
        options = _options_list(record, where)
        style = option_style if option_style is not None else draw_option_style(rng)
        if template.shuffle_options:
            options = [options[i] for i in rng.permutation(len(options))]
        options_text = format_options(options, style)
    inputs = _substitute(template.inputs, record, options_text, where)
    if options_text and not template.reads_options:
        inputs = f"{inputs.rstrip()}\n\n{options_text}"
    targets = _substitute(template.targets, record, "", where)
    if template.cot:
        answer = _field_text(record[template.answer_field], template.answer_field, "", None,
                             where).strip()
        if not answer:
            raise TemplateError(f"{where}: answer field '{template.answer_field}' is empty.")
        targets = f"{targets.rstrip()} {answer_sentence(answer, rng)}".lstrip()
    if not targets.strip():
        raise TemplateError(f"{where}: the targets render to an empty string (fields "
                            f"{sorted(template.fields())}); fix the record or the pattern.")
    return inputs, targets


def choose_template(templates: Sequence[Template], record: Mapping[str, Any], *,
                    with_options: bool, rng: np.random.Generator,
                    task: str = "") -> tuple[int, Template]:
    """Draws one template usable for ``record`` and returns ``(index, template)``.

    Every template's fields are checked against the record first, so a template naming a
    missing field fails on the first record, not only when it happens to be drawn.
    """
    if not templates:
        raise TemplateError(f"task '{task}': no templates given.")
    for template in templates:
        check_fields(template, record, task=task)
    usable = [(i, t) for i, t in enumerate(templates) if t.usable(with_options=with_options)]
    if not usable:
        kind = "accepts options" if with_options else "works without options"
        raise TemplateError(f"task '{task}': none of its {len(templates)} templates {kind}; "
                            "drop that variant or add such a template.")
    applicable = [(i, t) for i, t in usable if t.applies_to(record)]
    if not applicable:
        conditions = sorted({f"non-empty {f}" for _, t in usable for f in t.requires_nonempty}
                            | {f"empty {f}" for _, t in usable for f in t.requires_empty})
        raise TemplateError(
            f"task '{task}': no template applies to this record (templates need: "
            f"{', '.join(conditions)}). Add a template without those conditions.")
    return applicable[int(rng.integers(len(applicable)))]


# --------------------------------------------------------------------------- template sets


QA_TEMPLATES: tuple[Template, ...] = (
    Template("{question}", "{answer}", name="qa_plain"),
    Template("Answer the following question.\n\n{question}\n\n{options_}", "{answer}",
             name="qa_instruction"),
    Template("Question: {question}\n{options_}\nAnswer:", "{answer}", name="qa_labelled"),
    Template("Here is a question for you. Reply with just the answer.\n\n{question}",
             "{answer}", name="qa_reply"),
    Template("{question}\n\n{options_}\nWhich of the choices above is right?", "{answer}",
             name="qa_pick_choice", requires_options=True),
)

QA_INVERSION_TEMPLATES: tuple[Template, ...] = (
    inverted(QA_TEMPLATES[0], instruction="Write a question that has the following answer.",
             name="qa_inverted_write"),
    Template("Answer: {answer}\n\nWhat could the question have been?", "{question}",
             name="qa_inverted_guess", accepts_options=False),
)

COT_TEMPLATES: tuple[Template, ...] = (
    cot_template("{question}\n\nLet's work through it step by step.", name="cot_steps"),
    cot_template("Answer the question below. Explain your reasoning first, then give the "
                 "answer.\n\n{question}\n\n{options_}", name="cot_explain"),
    cot_template("Q: {question}\n{options_}\nA: Let's reason it out.", name="cot_qa"),
    cot_template("Solve this, showing how you get there:\n{question}", name="cot_solve"),
)

INSTRUCTION_TEMPLATES: tuple[Template, ...] = (
    Template("{instruction}\n\n{context}", "{response}", name="inst_ctx_after",
             requires_nonempty={"context"}),
    Template("{context}\n\n{instruction}", "{response}", name="inst_ctx_before",
             requires_nonempty={"context"}),
    Template("Instruction: {instruction}\nInput: {context}\n\nResponse:", "{response}",
             name="inst_ctx_labelled", requires_nonempty={"context"}),
    Template("Use the text below to carry out the task.\n\nText: {context}\n\n"
             "Task: {instruction}", "{response}", name="inst_ctx_task",
             requires_nonempty={"context"}),
    Template("{instruction}", "{response}", name="inst_plain", requires_empty={"context"}),
    Template("Instruction: {instruction}\n\nResponse:", "{response}", name="inst_labelled",
             requires_empty={"context"}),
    Template("Carry out the following task.\n{instruction}", "{response}", name="inst_task",
             requires_empty={"context"}),
)

DIALOG_TEMPLATES: tuple[Template, ...] = (
    Template("{dialog}", "{response}", name="dialog_plain"),
    Template("Continue the conversation below.\n\n{dialog}", "{response}",
             name="dialog_continue"),
    Template("Here is a conversation so far:\n{dialog}\n\nWhat would be a good next reply?",
             "{response}", name="dialog_next_reply"),
    Template("{dialog}\n\nNext turn:", "{response}", name="dialog_next_turn"),
)

PROMPT_COMPLETION_TEMPLATES: tuple[Template, ...] = (
    Template("{prompt}", "{completion}", name="prompt_completion"),
)
