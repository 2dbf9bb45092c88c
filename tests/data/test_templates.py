"""Tests for flantune.data.templates."""

from __future__ import annotations

import re

import numpy as np
import pytest

from flantune.data.errors import TemplateError
from flantune.data.seeding import rng_for
from flantune.data.templates import (
    ANSWER_SENTENCES,
    COT_TEMPLATES,
    DIALOG_TEMPLATES,
    INSTRUCTION_TEMPLATES,
    OPTION_STYLES,
    PROMPT_COMPLETION_TEMPLATES,
    QA_INVERSION_TEMPLATES,
    QA_TEMPLATES,
    OptionStyle,
    Template,
    choose_template,
    cot_template,
    extract_cot_answer,
    format_options,
    inverted,
    option_letter,
    render,
    render_options,
)

QA = {"question": "What is 2+2?", "answer": "4", "options": ["3", "4", "5"],
      "rationale": "Two plus two makes four."}


def rng(*key: object) -> np.random.Generator:
    return rng_for(0, *key)


# ----------------------------------------------------------------------------- Template


def test_fields_lists_what_the_patterns_read_without_options_placeholder():
    t = Template("Q: {question}\n{options_}", "{answer}")
    assert t.fields() == frozenset({"question", "answer"})


def test_fields_include_cot_answer_and_condition_fields():
    t = cot_template("{question}", rationale_field="why", answer_field="final")
    assert t.fields() == frozenset({"question", "why", "final"})
    t = Template("{instruction}", "{response}", requires_empty={"context"})
    assert t.fields() == frozenset({"instruction", "response", "context"})


@pytest.mark.parametrize("inputs, targets, message", [
    ("{}", "{answer}", "only plain record field names"),
    ("{0}", "{answer}", "only plain record field names"),
    ("{record.question}", "{answer}", "only plain record field names"),
    ("{question[0]}", "{answer}", "only plain record field names"),
    ("{question", "{answer}", "cannot parse the inputs pattern"),
    ("{question}", "{answer} {options_}", "may only appear in the inputs"),
    ("{options_} {question} {options_}", "{answer}", "more than once"),
])
def test_bad_patterns_fail_when_the_template_is_built(inputs, targets, message):
    with pytest.raises(TemplateError, match=re.escape(message)):
        Template(inputs, targets, name="bad")


def test_contradictory_flags_are_refused():
    with pytest.raises(TemplateError, match="contradict"):
        Template("{q}", "{a}", requires_options=True, accepts_options=False)
    with pytest.raises(TemplateError, match="both empty and non-empty"):
        Template("{q}", "{a}", requires_empty={"c"}, requires_nonempty={"c"})


def test_a_bare_string_condition_is_one_field_not_its_characters():
    t = Template("{q}", "{a}", requires_nonempty="context")
    assert t.requires_nonempty == frozenset({"context"})


# ----------------------------------------------------------------------------- render


def test_render_fills_fields():
    t = Template("Question: {question}\nAnswer:", "{answer}")
    assert render(t, QA, with_options=False, rng=rng()) == ("Question: What is 2+2?\nAnswer:", "4")


def test_render_formats_non_strings_with_str_and_honours_format_specs():
    t = Template("{n} apples cost {price:.2f} ({ok})", "{n}")
    record = {"n": 3, "price": 1.5, "ok": True}
    assert render(t, record, with_options=False, rng=rng()) == ("3 apples cost 1.50 (True)", "3")


def test_render_decodes_utf8_bytes():
    t = Template("{question}", "{answer}")
    record = {"question": "Où est-il ?".encode(), "answer": b"ici"}
    assert render(t, record, with_options=False, rng=rng()) == ("Où est-il ?", "ici")


def test_missing_field_error_names_task_template_field_and_record_fields():
    t = Template("{question} ({topic})", "{answer}", name="with_topic")
    with pytest.raises(TemplateError) as err:
        render(t, {"question": "q", "answer": "a"}, with_options=False, rng=rng(),
               task="trivia")
    text = str(err.value)
    assert "task 'trivia'" in text
    assert "'with_topic'" in text
    assert "no field 'topic'" in text
    assert "record fields: answer, question" in text


def test_list_valued_field_is_refused_outside_options():
    t = Template("{question}", "{answer}", name="qa")
    with pytest.raises(TemplateError, match="field 'answer' holds a list; only 'options'"):
        render(t, {"question": "q", "answer": ["a", "b"]}, with_options=False, rng=rng())


def test_empty_target_is_an_error():
    t = Template("{question}", "{answer}", name="qa")
    with pytest.raises(TemplateError, match="targets render to an empty string"):
        render(t, {"question": "q", "answer": "  "}, with_options=False, rng=rng(), task="t")


@pytest.mark.parametrize("pattern, expected", [
    ("{q}\n\n{options_}", "Q?"),
    ("{q}\n\n{options_}\n", "Q?"),
    ("{options_}\n\n{q}", "Q?"),
    ("{q}\n{options_}\nAnswer:", "Q?\nAnswer:"),
    ("{q}\n\n{options_}\nAnswer:", "Q?\n\nAnswer:"),
    ("Question: {q} {options_}\nAnswer:", "Question: Q?\nAnswer:"),
    ("Pick {options_} now: {q}", "Pick now: Q?"),
    ("{q}{options_}\nEnd", "Q?\nEnd"),
])
def test_empty_options_placeholder_is_removed_with_its_gap(pattern, expected):
    t = Template(pattern, "{a}")
    record = {"q": "Q?", "a": "A", "options": ["x", "y"]}
    assert render(t, record, with_options=False, rng=rng())[0] == expected


def test_record_whitespace_is_left_alone():
    t = Template("{q}\n\n{options_}", "{a}")
    record = {"q": "line one  \n\n\n  line two ", "a": "A"}
    assert render(t, record, with_options=False, rng=rng())[0] == "line one  \n\n\n  line two "


# ----------------------------------------------------------------------------- options


@pytest.mark.parametrize("style, expected", [
    (OptionStyle.DASH_LIST, "OPTIONS:\n- red\n- green\n- blue"),
    (OptionStyle.LETTERED_INLINE, "(A) red (B) green (C) blue"),
    (OptionStyle.CHOOSE_FROM, "Choose from: red, green, blue."),
    (OptionStyle.ROMAN_LIST, "Possible answers:\n[i] red\n[ii] green\n[iii] blue"),
    (OptionStyle.NUMBERED_LIST, "Pick one of these:\n1. red\n2. green\n3. blue"),
    (OptionStyle.LETTERED_LIST, "Answer choices:\nA) red\nB) green\nC) blue"),
])
def test_each_option_style_renders_as_documented(style, expected):
    assert format_options(["red", "green", "blue"], style) == expected


def test_there_are_at_least_four_option_styles():
    assert set(OPTION_STYLES) == set(OptionStyle) and len(OPTION_STYLES) >= 4


def test_choose_from_does_not_double_a_final_full_stop():
    assert format_options(["yes", "no."], OptionStyle.CHOOSE_FROM) == "Choose from: yes, no."


def test_option_letters_and_roman_numerals_continue_past_the_basics():
    assert [option_letter(i) for i in (0, 1, 25, 26, 27, 51, 52, 701, 702)] == [
        "A", "B", "Z", "AA", "AB", "AZ", "BA", "ZZ", "AAA"]
    rendered = format_options([str(i) for i in range(14)], OptionStyle.ROMAN_LIST)
    labels = [line.split("]")[0][1:] for line in rendered.splitlines()[1:]]
    assert labels == ["i", "ii", "iii", "iv", "v", "vi", "vii", "viii", "ix", "x", "xi", "xii",
                      "xiii", "xiv"]


def test_render_options_is_seeded_and_reaches_every_style():
    options = ["a", "b"]
    seen = set()
    for i in range(200):
        first = render_options(options, rng("example", i))
        assert render_options(options, rng("example", i)) == first
        seen.add(first)
    assert seen == {format_options(options, s) for s in OptionStyle}


def test_explicit_style_wins_over_the_generator():
    assert render_options(["a", "b"], rng(), style=OptionStyle.LETTERED_INLINE) == "(A) a (B) b"


def test_options_placeholder_places_options_in_the_pattern():
    t = Template("{question}\n{options_}\nAnswer:", "{answer}")
    inputs, _ = render(t, QA, with_options=True, rng=rng(),
                       option_style=OptionStyle.DASH_LIST)
    assert inputs == "What is 2+2?\nOPTIONS:\n- 3\n- 4\n- 5\nAnswer:"


def test_options_are_appended_after_a_blank_line_without_placeholder():
    t = Template("{question}", "{answer}")
    inputs, _ = render(t, QA, with_options=True, rng=rng(),
                       option_style=OptionStyle.LETTERED_INLINE)
    assert inputs == "What is 2+2?\n\n(A) 3 (B) 4 (C) 5"


def test_option_order_is_kept_unless_the_template_asks_to_shuffle():
    options = [f"opt{i}" for i in range(6)]
    record = {"q": "Q", "a": "opt0", "options": options}
    keep = Template("{q}\n{options_}", "{a}")
    shuffle = Template("{q}\n{options_}", "{a}", shuffle_options=True)
    orders = set()
    for i in range(50):
        kept, _ = render(keep, record, with_options=True, rng=rng(i),
                         option_style=OptionStyle.DASH_LIST)
        assert kept.splitlines()[2:] == [f"- {o}" for o in options]
        shuffled, _ = render(shuffle, record, with_options=True, rng=rng(i),
                             option_style=OptionStyle.DASH_LIST)
        assert render(shuffle, record, with_options=True, rng=rng(i),
                      option_style=OptionStyle.DASH_LIST)[0] == shuffled
        order = tuple(line[2:] for line in shuffled.splitlines()[2:])
        assert sorted(order) == options
        orders.add(order)
    assert len(orders) > 10


@pytest.mark.parametrize("options, message", [
    ("3, 4, 5", "must be a list of strings"),
    ([], "is an empty list"),
    (["a", ""], "option 1 of 'options' is empty"),
    (["a", ["b"]], "option 1 of 'options' is list"),
])
def test_bad_options_are_reported(options, message):
    t = Template("{question}\n{options_}", "{answer}", name="qa")
    record = {**QA, "options": options}
    with pytest.raises(TemplateError, match=re.escape(message)):
        render(t, record, with_options=True, rng=rng(), task="t")


def test_missing_options_field_is_reported_when_options_are_asked_for():
    t = Template("{question}\n{options_}", "{answer}", name="qa")
    record = {"question": "q", "answer": "a"}
    with pytest.raises(TemplateError, match="no field 'options'"):
        render(t, record, with_options=True, rng=rng(), task="t")
    assert render(t, record, with_options=False, rng=rng()) == ("q", "a")


def test_options_array_from_a_tensorflow_source_is_accepted():
    record = {**QA, "options": np.array([b"3", b"4"], dtype=object)}
    t = Template("{question}\n{options_}", "{answer}")
    inputs, _ = render(t, record, with_options=True, rng=rng(),
                       option_style=OptionStyle.CHOOSE_FROM)
    assert inputs == "What is 2+2?\nChoose from: 3, 4."


def test_requires_and_refuses_options_are_enforced():
    needs = Template("{question}\n{options_}", "{answer}", requires_options=True, name="needs")
    with pytest.raises(TemplateError, match="requires options"):
        render(needs, QA, with_options=False, rng=rng())
    refuses = Template("{question}", "{answer}", accepts_options=False, name="refuses")
    with pytest.raises(TemplateError, match="does not accept options"):
        render(refuses, QA, with_options=True, rng=rng())


# ----------------------------------------------------------------------------- CoT


def test_cot_target_is_rationale_then_a_seeded_answer_sentence():
    t = cot_template("{question}\nThink first.")
    phrasings = set()
    for i in range(100):
        inputs, targets = render(t, QA, with_options=False, rng=rng(i))
        assert inputs == "What is 2+2?\nThink first."
        assert render(t, QA, with_options=False, rng=rng(i))[1] == targets
        assert targets.startswith("Two plus two makes four. ")
        sentence = targets[len("Two plus two makes four. "):]
        assert sentence in {s.format("4") + "." for s in ANSWER_SENTENCES}
        assert extract_cot_answer(targets) == "4"
        phrasings.add(sentence)
    assert len(phrasings) == len(ANSWER_SENTENCES)


def test_cot_answer_sentence_does_not_double_punctuation():
    t = cot_template("{question}")
    record = {"question": "Is it?", "rationale": "It is.", "answer": "yes."}
    _, targets = render(t, record, with_options=False, rng=rng())
    assert not targets.endswith("..") and targets.endswith("yes.")


def test_cot_empty_answer_is_an_error():
    t = cot_template("{question}", name="cot")
    with pytest.raises(TemplateError, match="answer field 'answer' is empty"):
        render(t, {**QA, "answer": ""}, with_options=False, rng=rng())


def test_extract_cot_answer_reads_the_last_answer_sentence():
    text = "First guess: The answer is 3. No. Two and two is four. So the answer is 4."
    assert extract_cot_answer(text) == "4"
    assert extract_cot_answer("Therefore, the final answer is 3.5.") == "3.5"
    assert extract_cot_answer("no conclusion here") is None


# ----------------------------------------------------------------------------- inversion


def test_inverted_shows_the_target_and_asks_for_the_input():
    base = Template("Answer this: {question}\n{options_}", "{answer}", name="qa")
    inv = inverted(base, instruction="Which question has this answer?")
    assert inv.name == "qa_inverted"
    assert not inv.usable(with_options=True)
    assert render(inv, QA, with_options=False, rng=rng()) == (
        "Which question has this answer?\n\n4", "What is 2+2?")


def test_inverted_with_context_and_explicit_product():
    base = Template("{passage}\n\n{question}", "{answer}")
    record = {"passage": "Cats sleep a lot.", "question": "Do cats sleep?", "answer": "Yes"}
    with pytest.raises(TemplateError, match="pass produce="):
        inverted(base, instruction="Ask about the passage.")
    inv = inverted(base, instruction="Ask a question about the passage with this answer.",
                   context="Passage: {passage}", produce="{question}")
    assert render(inv, record, with_options=False, rng=rng()) == (
        "Ask a question about the passage with this answer.\n\nPassage: Cats sleep a lot."
        "\n\nYes", "Do cats sleep?")


def test_cot_templates_cannot_be_inverted():
    with pytest.raises(TemplateError, match="cannot invert a chain-of-thought"):
        inverted(COT_TEMPLATES[0], instruction="x")


# ----------------------------------------------------------------------------- choice


def test_choose_template_is_deterministic_and_spreads_over_templates():
    counts = {t.name: 0 for t in QA_TEMPLATES if t.usable(with_options=False)}
    for i in range(400):
        index, t = choose_template(QA_TEMPLATES, QA, with_options=False, rng=rng("t", i))
        assert choose_template(QA_TEMPLATES, QA, with_options=False, rng=rng("t", i)) == (index, t)
        assert QA_TEMPLATES[index] is t
        counts[t.name] += 1
    assert all(c > 40 for c in counts.values()), counts


def test_choose_template_checks_every_template_not_only_the_drawn_one():
    templates = [Template("{question}", "{answer}", name="ok"),
                 Template("{question} {hint}", "{answer}", name="needs_hint")]
    for i in range(10):
        with pytest.raises(TemplateError, match="'needs_hint'.*no field 'hint'"):
            choose_template(templates, QA, with_options=False, rng=rng(i), task="t")


def test_instruction_templates_choose_by_whether_context_is_empty():
    with_ctx = {"instruction": "Summarise.", "context": "A long text.", "response": "Short."}
    without = {**with_ctx, "context": ""}
    for i in range(100):
        _, t = choose_template(INSTRUCTION_TEMPLATES, with_ctx, with_options=False, rng=rng(i))
        inputs, _ = render(t, with_ctx, with_options=False, rng=rng(i))
        assert "A long text." in inputs
        _, t = choose_template(INSTRUCTION_TEMPLATES, without, with_options=False, rng=rng(i))
        assert "{context}" not in t.inputs
        inputs, _ = render(t, without, with_options=False, rng=rng(i))
        assert "Summarise." in inputs and not inputs.endswith("\n")


def test_no_applicable_template_is_an_error():
    templates = [Template("{q} {c}", "{a}", requires_nonempty={"c"})]
    with pytest.raises(TemplateError, match="no template applies.*non-empty c"):
        choose_template(templates, {"q": "Q", "c": "", "a": "A"}, with_options=False,
                        rng=rng(), task="t")
    with pytest.raises(TemplateError, match="none of its 1 templates accepts options"):
        choose_template([Template("{q}", "{a}", accepts_options=False)],
                        {"q": "Q", "a": "A", "options": ["x"]}, with_options=True, rng=rng())


# ----------------------------------------------------------------------------- template sets


@pytest.mark.parametrize("templates, record", [
    (QA_TEMPLATES, QA),
    (QA_INVERSION_TEMPLATES, QA),
    (COT_TEMPLATES, QA),
    (INSTRUCTION_TEMPLATES, {"instruction": "Do X.", "context": "Some text.", "response": "R"}),
    (INSTRUCTION_TEMPLATES, {"instruction": "Do X.", "context": "", "response": "R"}),
    (DIALOG_TEMPLATES, {"dialog": "User: hi\nBot: hello\nUser: how are you?",
                        "response": "Fine."}),
    (PROMPT_COMPLETION_TEMPLATES, {"prompt": "Once upon", "completion": " a time"}),
])
def test_generic_template_sets_render_cleanly(templates, record):
    names = [t.name for t in templates]
    assert len(set(names)) == len(names) and all(names)
    for t in templates:
        for with_options in (False, True):
            if not t.usable(with_options=with_options) or not t.applies_to(record):
                continue
            if with_options and "options" not in record:
                continue
            inputs, targets = render(t, record, with_options=with_options, rng=rng(t.name))
            assert "{" not in inputs and "}" not in inputs
            assert inputs == inputs.strip() or inputs == record.get("prompt")
            assert targets.strip()
