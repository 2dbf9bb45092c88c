"""Tests for flantune.selfinstruct.novelty: the same floats and decisions as rouge-score."""

from __future__ import annotations

import numpy as np
from rouge_score import rouge_scorer

from flantune.selfinstruct.novelty import NoveltyIndex, rouge_l_fmeasure, tokenize

SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
WORDS = ("write a short poem about the ocean and moon at night give three reasons why people "
         "like cats list some ideas for dinner explain how to").split()


def reference(target: str, prediction: str) -> float:
    return SCORER.score(target, prediction)["rougeL"].fmeasure


def reference_stream(pool: list[str], candidates: list[str], threshold: float = 0.7):
    """Self-Instruct's loop: score against the whole pool, keep (and append) unless > threshold."""
    pool = list(pool)
    out = []
    for inst in candidates:
        scores = [reference(inst, other) for other in pool]
        best = max(scores)
        out.append((not best > threshold, best))
        if not best > threshold:
            pool.append(inst)
    return out


def random_text(rng: np.random.Generator, vocab: tuple[str, ...], lo: int, hi: int) -> str:
    return " ".join(rng.choice(vocab, rng.integers(lo, hi + 1)))


def edited(rng: np.random.Generator, text: str) -> str:
    """A near-duplicate: 1-3 small token edits, sometimes with case / punctuation noise."""
    tokens = text.split()
    for _ in range(rng.integers(1, 4)):
        op = rng.integers(3)
        i = int(rng.integers(len(tokens) + (op == 1)))
        if op == 0 and tokens:
            tokens[min(i, len(tokens) - 1)] = str(rng.choice(WORDS))
        elif op == 1:
            tokens.insert(i, str(rng.choice(WORDS)))
        elif len(tokens) > 1:
            del tokens[min(i, len(tokens) - 1)]
    out = " ".join(tokens)
    if rng.random() < 0.3:
        out = out.capitalize() + rng.choice([".", "?", "!", " ...", ""])
    return out


# ------------------------------------------------------------------------------ pairwise values


ADVERSARIAL = [
    "", " ", "...", "!!! ???", "a", "a a a a", "a a a a a a a a", "a b a b a b", "b a b a",
    "The Cat", "the cat", "THE CAT!", "the-cat", "thecat", "cat the", "2024 is 2024", "20 24",
    "Ünïcode tëxt", "unicode text", "n code t xt", "\u212a", "k", "K k \u212a", "İstanbul",
    "i stanbul", "ﬁle", "le", "straße strasse", "stra e", "½ ² 2", "tab\there\nnewline",
    "a_b a-b a.b", "x" * 50, " ".join(["word"] * 300), " ".join(str(i) for i in range(300)),
    " ".join(str(i % 7) for i in range(400)),
]


def test_tokenize_is_rouge_scores():
    for text in ADVERSARIAL:
        assert tokenize(text) == SCORER._tokenizer.tokenize(text)
    assert tokenize("\u212a") == ["k"]  # the Kelvin sign lowercases to an ASCII k


def test_fmeasure_equals_rouge_score_on_adversarial_strings():
    for target in ADVERSARIAL:
        for prediction in ADVERSARIAL:
            assert rouge_l_fmeasure(target, prediction) == reference(target, prediction), (
                target, prediction)


def test_fmeasure_equals_rouge_score_on_random_strings():
    rng = np.random.default_rng(0)
    for vocab_size in (2, 3, 5, 12):
        vocab = tuple(WORDS[:vocab_size])
        for _ in range(400):
            target = random_text(rng, vocab, 0, 20)
            prediction = random_text(rng, vocab, 0, 20)
            assert rouge_l_fmeasure(target, prediction) == reference(target, prediction)


def test_mathematical_ties_at_the_threshold_follow_rouge_scores_floats():
    ten = "a b c d e f g h i j"
    seven_of_ten = "a b c d e f g x y z"
    assert rouge_l_fmeasure(ten, seven_of_ten) == reference(ten, seven_of_ten) == 0.7
    seven = "k l m n o p q"
    thirteen = "k l m n o p q r s t u v w"
    assert rouge_l_fmeasure(seven, thirteen) == reference(seven, thirteen) > 0.7
    index = NoveltyIndex([seven_of_ten, thirteen])
    assert index.is_novel(ten) and not index.is_novel(seven)
    assert index.most_similar(seven) == (reference(seven, thirteen), 1)


# --------------------------------------------------------------------------------- the index


def test_empty_pool_and_empty_texts():
    index = NoveltyIndex()
    assert len(index) == 0 and index.texts == []
    assert index.most_similar("anything") == (0.0, None)
    assert index.is_novel("anything")
    assert index.check_and_add("") == (True, 0.0, None)
    assert index.most_similar("") == (0.0, 0)
    assert index.most_similar("abc") == (0.0, 0)
    assert index.check_and_add("abc") == (True, 0.0, 0)
    assert index.most_similar("...") == (0.0, 0)  # an empty query scores 0 against everything
    assert index.check_and_add("ABC!") == (False, 1.0, 1)
    assert index.texts == ["", "abc"] and len(index) == 2


def test_most_similar_lowest_index_among_ties():
    index = NoveltyIndex(["x y", "a b c", "c b a", "a b c"])
    assert index.most_similar("a b c") == (1.0, 1)
    assert index.most_similar("b") == (reference("b", "a b c"), 1)
    assert index.most_similar("zzz") == (0.0, 0)


def test_most_similar_equals_the_reference_maximum():
    rng = np.random.default_rng(1)
    vocab = tuple(WORDS[:8])
    pool = [random_text(rng, vocab, 0, 12) for _ in range(60)]
    index = NoveltyIndex(pool)
    for _ in range(60):
        query = random_text(rng, vocab, 0, 12)
        scores = [reference(query, other) for other in pool]
        best, item = index.most_similar(query)
        assert best == max(scores)
        assert item == scores.index(best)
        assert index.is_novel(query) == (not max(scores) > 0.7)


def stream(seed: int, pool_size: int, candidates: int) -> tuple[list[str], list[str]]:
    """A pool and a candidate stream full of near-duplicates and constructed 0.7 ties."""
    rng = np.random.default_rng(seed)
    vocab = tuple(WORDS)
    pool = [random_text(rng, vocab, 5, 13) for _ in range(pool_size)]
    out: list[str] = []
    for _ in range(candidates):
        kind = rng.random()
        source = str(rng.choice(pool + out))
        if kind < 0.5:
            out.append(edited(rng, source))
        elif kind < 0.7:  # a 10-token text sharing exactly 7 tokens in order: F = 0.7 exactly
            base = (source.split() + list(rng.choice(vocab, 10)))[:10]
            keep = sorted(rng.choice(10, 7, replace=False))
            fresh = [f"new{rng.integers(1000)}" for _ in range(3)]
            tokens = [base[i] if i in keep else fresh.pop() for i in range(10)]
            out.append(" ".join(tokens))
        elif kind < 0.8:  # a 7-token subsequence of a 13-token text: F = 0.7000000000000001
            base = (source.split() + list(rng.choice(vocab, 13)))[:13]
            out.append(" ".join(base[i] for i in sorted(rng.choice(13, 7, replace=False))))
        else:
            out.append(random_text(rng, vocab, 3, 13))
    return pool, out


def test_sequential_decisions_equal_the_reference_loop():
    pool, candidates = stream(0, 300, 300)
    expected = reference_stream(pool, candidates)
    index = NoveltyIndex(pool)
    got = [index.check_and_add(c)[:2] for c in candidates]
    assert got == expected
    kept = [c for c, (novel, _) in zip(candidates, expected, strict=True) if novel]
    assert index.texts == pool + kept
    scores = np.array([s for _, s in expected])
    # The stream does exercise the threshold: both sides of it, and exact float ties.
    assert 0.1 < np.mean(scores > 0.7) < 0.9
    assert np.any(scores == 0.7) and np.any(scores == 0.7000000000000001)


def test_is_novel_agrees_with_most_similar():
    pool, candidates = stream(1, 150, 150)
    index = NoveltyIndex(pool)
    for c in candidates:
        assert index.is_novel(c) == (not index.most_similar(c)[0] > index.threshold)
    strict = NoveltyIndex(pool, threshold=0.5)
    for c in candidates[:50]:
        assert strict.is_novel(c) == (not strict.most_similar(c)[0] > 0.5)
