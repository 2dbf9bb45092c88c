"""Metric functions against hand-computed values."""

from __future__ import annotations

import pytest

from flantune.metrics import (
    accuracy,
    bleu,
    exact_match,
    macro_f1,
    option_answer,
    positive_f1,
    reference_answers,
    rouge,
    squad,
    squad_normalize,
    trivia_qa,
    trivia_qa_normalize,
)


def test_accuracy_is_exact_equality():
    assert accuracy(["a", "b", "c"], ["a", "x", "c"]) == {"accuracy": pytest.approx(200 / 3)}
    assert accuracy(["Yes"], ["yes"]) == {"accuracy": 0.0}  # no normalization (exact_match has)
    assert exact_match(["Yes"], ["yes."]) == {"exact_match": 100.0}
    with pytest.raises(ValueError, match="2 targets but 1 predictions"):
        accuracy(["a", "b"], ["a"])


def test_macro_f1_averages_per_label_f1():
    # yes: tp 1, fp 0, fn 1 -> 2/3; no: tp 2, fp 1, fn 0 -> 4/5.
    got = macro_f1(["yes", "yes", "no", "no"], ["yes", "no", "no", "no"])
    assert got == {"macro_f1": pytest.approx(100 * (2 / 3 + 4 / 5) / 2)}


def test_squad_takes_the_best_reference_after_normalization():
    assert squad_normalize("The  Eiffel Tower!") == "eiffel tower"
    got = squad([["The Eiffel Tower", "Eiffel tower"], "Paris France"],
                ["eiffel tower!", "Paris"])
    # Second example: precision 1, recall 1/2 -> F1 2/3.
    assert got == {"em": pytest.approx(50.0), "f1": pytest.approx(100 * (1 + 2 / 3) / 2)}


def test_rouge_f_measures():
    got = rouge(["the cat sat"], ["the cat ran"])
    # unigrams: 2 of 3 both ways; bigrams: 1 of 2; LCS "the cat": 2 of 3.
    assert got == {"rouge1": pytest.approx(200 / 3), "rouge2": pytest.approx(50.0),
                   "rougeLsum": pytest.approx(200 / 3)}
    two_sentences = rouge(["A dog ran. It was fast."], ["It was fast. A dog ran."])
    assert two_sentences["rougeLsum"] == pytest.approx(100.0)  # sentence order does not matter
    assert two_sentences["rouge2"] < 100.0


def test_bleu_with_one_or_several_references():
    sentence = "the quick brown fox jumps over the lazy dog"
    assert bleu([sentence], [sentence]) == {"bleu": pytest.approx(100.0)}
    assert bleu([["a completely different line here", sentence]], [sentence]) == {
        "bleu": pytest.approx(100.0)}
    assert bleu([sentence], ["quick fox"])["bleu"] < 10.0
    with pytest.raises(ValueError, match="different numbers of references"):
        bleu([["a", "b"], "c"], ["a", "c"])


def test_option_answer_maps_generated_text_to_an_option():
    example = {"record": {"options": ["yes", "it is not possible to tell", "no"]}}
    assert option_answer("Yes.", example) == "yes"
    assert option_answer("It is not possible to tell!", example) == "it is not possible to tell"
    assert option_answer("no, because the premise says otherwise", example) == "no"
    assert option_answer("maybe", example) == "maybe"  # no option: kept, scores as wrong
    assert option_answer(" yes ", {"options": ["yes", "no"]}) == "yes"  # rank features
    assert option_answer("no", {"options": ["yes ", "no  "]}) == "no"  # stripped like targets
    assert option_answer(" Yes ", example, is_target=True) == "Yes"
    assert option_answer(b"no", None) == "no"
    targets = [option_answer(t, example, is_target=True) for t in ("yes", "no")]
    predictions = [option_answer(p, example) for p in ("YES", "Maybe not")]
    assert accuracy(targets, predictions) == {"accuracy": 50.0}


def test_reference_answers_give_every_reference_to_the_metric():
    example = {"record": {"references": ["Paris", "Paris, France"]}}
    target = reference_answers("Paris", example, is_target=True)
    assert target == ["Paris", "Paris, France"]
    assert reference_answers("City of Paris", example, is_target=True) == [
        "City of Paris", "Paris", "Paris, France"]
    assert reference_answers("Paris ", None, is_target=True) == "Paris"
    assert reference_answers(" paris france ", example) == "paris france"
    assert squad([target], ["paris france"]) == {"em": 100.0, "f1": 100.0}


def test_positive_f1_scores_one_class():
    # yes: tp 1, fp 1, fn 1 -> 2 / 4.
    f1 = positive_f1("yes", negative="no")
    assert f1(["yes", "yes", "no", "no"], ["yes", "no", "yes", "no"]) == {"f1": 50.0}
    assert f1(["no"], ["no"]) == {"f1": 0.0}


def test_positive_f1_counts_an_invalid_answer_as_wrong():
    """T5's f1_score_with_invalid: an answer that is neither label is the opposite of the target,
    so on a negative example it is a false positive (and on a positive one a false negative)."""
    f1 = positive_f1("yes", negative="no")
    # tp 1 (row 0), fn 1 (row 1: "maybe"), fp 1 (row 2: "maybe"), tn (row 3) -> 2 / 4.
    assert f1(["yes", "yes", "no", "no"], ["yes", "maybe", "maybe", "no"]) == {"f1": 50.0}
    assert f1(["yes", "no"], ["yes", "It is"]) == {"f1": pytest.approx(100 * 2 / 3)}
    with pytest.raises(ValueError, match="target 'perhaps' is neither"):
        f1(["perhaps"], ["yes"])


def test_trivia_qa_normalization_drops_quotes_and_underscores():
    """T5's normalize_trivia_qa: punctuation, typographic quotes, accents, backquotes and
    underscores become spaces (SQuAD's normalization deletes ASCII punctuation only)."""
    assert trivia_qa_normalize("\u2018The  Jean-Paul_Sartre\u2019!") == "jean paul sartre"
    assert squad_normalize("\u2018The  Jean-Paul_Sartre\u2019!") == "\u2018 jeanpaulsartre\u2019"
    assert trivia_qa_normalize("`Rock \u00b4n\u00b4 roll`") == "rock n roll"
    got = trivia_qa([["Jean-Paul Sartre", "Sartre"], "New York City"],
                    ["\u2018jean paul sartre\u2019", "new_york"])
    # Second example: precision 1, recall 2/3 -> F1 4/5.
    assert got == {"em": pytest.approx(50.0), "f1": pytest.approx(100 * (1 + 4 / 5) / 2)}
    assert squad([["Jean-Paul Sartre", "Sartre"]], ["\u2018jean paul sartre\u2019"]) == {
        "em": 0.0, "f1": 0.0}
