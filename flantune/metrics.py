"""Postprocessors and metric functions in SeqIO's conventions, for task definitions.

Metric functions take ``(targets, predictions)`` lists and return ``{name: value}``, as
``seqio.Task(metric_fns=...)`` expects; postprocessors take ``(text, example=None,
is_target=False)``.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from flantune.data.templates import extract_cot_answer


def normalize_answer(text: str) -> str:
    """Case- and whitespace-insensitive form of a short answer (trailing full stop dropped)."""
    text = " ".join(str(text).split()).lower()
    return text[:-1] if text.endswith(".") else text


def cot_answer(text: str, example: Mapping[str, Any] | None = None, is_target: bool = False
               ) -> str:
    """The final answer of a chain-of-thought output ("... The answer is X."), else the text."""
    del example, is_target
    text = text.decode("utf-8") if isinstance(text, bytes) else text
    answer = extract_cot_answer(text)
    return (answer if answer is not None else text).strip()


def exact_match(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    """Percentage of predictions equal to their target after :func:`normalize_answer`."""
    if len(targets) != len(predictions):
        raise ValueError(f"exact_match: {len(targets)} targets but {len(predictions)} predictions.")
    if not targets:
        return {"exact_match": 0.0}
    hits = sum(normalize_answer(t) == normalize_answer(p) for t, p in zip(targets, predictions,
                                                                          strict=True))
    return {"exact_match": 100.0 * hits / len(targets)}


def _check_lengths(name: str, targets: Sequence[Any], predictions: Sequence[Any]) -> None:
    if len(targets) != len(predictions):
        raise ValueError(f"{name}: {len(targets)} targets but {len(predictions)} predictions.")


def _references(target: Any) -> list[str]:
    """A target as a list of reference strings (SQuAD-style tasks give several)."""
    if isinstance(target, str | bytes):
        return [target.decode("utf-8") if isinstance(target, bytes) else target]
    return [str(t) for t in target]


def accuracy(targets: Sequence[Any], predictions: Sequence[Any]) -> dict[str, float]:
    """Percentage of predictions exactly equal to their target (after postprocessing; use it
    for class labels and rank-classified options)."""
    _check_lengths("accuracy", targets, predictions)
    if not targets:
        return {"accuracy": 0.0}
    hits = sum(t == p for t, p in zip(targets, predictions, strict=True))
    return {"accuracy": 100.0 * hits / len(targets)}


def macro_f1(targets: Sequence[Any], predictions: Sequence[Any]) -> dict[str, float]:
    """F1 per class label (the labels seen in targets), averaged; times 100. Written here
    because scikit-learn, which has it, is not a dependency."""
    _check_lengths("macro_f1", targets, predictions)
    labels = sorted({str(t) for t in targets})
    if not labels:
        return {"macro_f1": 0.0}
    scores = []
    for label in labels:
        tp = sum(str(t) == label and str(p) == label for t, p in zip(targets, predictions,
                                                                      strict=True))
        fp = sum(str(t) != label and str(p) == label for t, p in zip(targets, predictions,
                                                                      strict=True))
        fn = sum(str(t) == label and str(p) != label for t, p in zip(targets, predictions,
                                                                      strict=True))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return {"macro_f1": 100.0 * sum(scores) / len(scores)}


_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_SQUAD_PUNCTUATION = frozenset(string.punctuation)
# The official TriviaQA script also treats typographic quotes, accents, backquotes and
# underscores as punctuation, and replaces punctuation by a space instead of deleting it.
_TRIVIA_QA_PUNCTUATION = frozenset(string.punctuation + "\u2018\u2019\u00b4`_")


def squad_normalize(text: str) -> str:
    """SQuAD's answer normalization: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in str(text).lower() if ch not in _SQUAD_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def trivia_qa_normalize(text: str) -> str:
    """TriviaQA's answer normalization (T5's ``normalize_trivia_qa``): lower case, punctuation
    (with quotes and underscores) replaced by spaces, no articles, single spaces."""
    text = "".join(" " if ch in _TRIVIA_QA_PUNCTUATION else ch for ch in str(text).lower())
    return " ".join(_ARTICLES.sub(" ", text).split())


def _token_f1(reference: str, prediction: str) -> float:
    """Token F1 of two normalized answers."""
    ref, pred = reference.split(), prediction.split()
    common = collections.Counter(ref) & collections.Counter(pred)
    overlap = sum(common.values())
    if not ref or not pred:
        return float(ref == pred)
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred), overlap / len(ref)
    return 2 * precision * recall / (precision + recall)


def _qa_scores(name: str, normalize: Callable[[str], str], targets: Sequence[Any],
               predictions: Sequence[str]) -> dict[str, float]:
    """Exact match and token F1, best over each example's references, times 100."""
    _check_lengths(name, targets, predictions)
    if not targets:
        return {"em": 0.0, "f1": 0.0}
    em = f1 = 0.0
    for target, prediction in zip(targets, predictions, strict=True):
        references = [normalize(r) for r in _references(target)]
        prediction = normalize(prediction)
        em += max(float(r == prediction) for r in references)
        f1 += max(_token_f1(r, prediction) for r in references)
    return {"em": 100.0 * em / len(targets), "f1": 100.0 * f1 / len(targets)}


def squad(targets: Sequence[Any], predictions: Sequence[str]) -> dict[str, float]:
    """SQuAD v1.1 exact match and token F1 (best over each example's reference answers),
    times 100. A target may be one answer or a list of them."""
    return _qa_scores("squad", squad_normalize, targets, predictions)


def trivia_qa(targets: Sequence[Any], predictions: Sequence[str]) -> dict[str, float]:
    """Exact match and token F1 after :func:`trivia_qa_normalize` (best over each example's
    references), times 100: T5's and FLAN's metric for TriviaQA and Natural Questions."""
    return _qa_scores("trivia_qa", trivia_qa_normalize, targets, predictions)


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _sentences_per_line(text: str) -> str:
    """ROUGE-Lsum treats lines as sentences; split after sentence-final punctuation (a rule
    instead of nltk's punkt, whose data would have to be downloaded)."""
    return "\n".join(s for s in _SENTENCE_END.split(str(text).strip()) if s)


def rouge(targets: Sequence[Any], predictions: Sequence[str]) -> dict[str, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-Lsum F-measures (rouge-score, Porter stemming), averaged
    over examples, times 100; with several references the best one counts."""
    from rouge_score import rouge_scorer

    _check_lengths("rouge", targets, predictions)
    types = ("rouge1", "rouge2", "rougeLsum")
    if not targets:
        return dict.fromkeys(types, 0.0)
    scorer = rouge_scorer.RougeScorer(list(types), use_stemmer=True)
    totals = dict.fromkeys(types, 0.0)
    for target, prediction in zip(targets, predictions, strict=True):
        candidate = _sentences_per_line(prediction)
        scores = [scorer.score(_sentences_per_line(r), candidate) for r in _references(target)]
        for kind in types:
            totals[kind] += max(s[kind].fmeasure for s in scores)
    return {k: 100.0 * v / len(targets) for k, v in totals.items()}


def bleu(targets: Sequence[Any], predictions: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU with sacrebleu's defaults (13a tokenization, exponential smoothing), as
    WMT reports it; a target may be a list of references (all targets the same count)."""
    import sacrebleu

    _check_lengths("bleu", targets, predictions)
    if not targets:
        return {"bleu": 0.0}
    references = [_references(t) for t in targets]
    counts = {len(r) for r in references}
    if len(counts) != 1:
        raise ValueError(f"bleu: targets have different numbers of references {sorted(counts)}; "
                         "give every example the same number.")
    streams = [list(stream) for stream in zip(*references, strict=True)]
    return {"bleu": float(sacrebleu.corpus_bleu([str(p) for p in predictions], streams).score)}


# --------------------------------------------------------------------------- postprocessors


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _record_of(example: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The raw record flantune's evaluation passes in the example features, if any."""
    if example is None:
        return None
    record = example.get("record")
    return record if isinstance(record, Mapping) else None


def _option_key(text: str) -> str:
    """Comparison form of an option: SQuAD-normalized (case, punctuation, articles)."""
    return squad_normalize(text)


def option_answer(text: str | bytes, example: Mapping[str, Any] | None = None,
                  is_target: bool = False) -> str:
    """The answer option a generated text names, for classification and multiple choice.

    The text is matched against the example's options (``example["options"]``, else the
    record's ``options``) after :func:`squad_normalize`; a text naming an option exactly, or
    starting with exactly one option, becomes that option's text (stripped, as targets are).
    Anything else is returned stripped (and scores as wrong). Targets are returned stripped.
    """
    text = _text(text).strip()
    if is_target or example is None:
        return text
    options = example.get("options")
    if not options:
        record = _record_of(example)
        options = record.get("options") if record is not None else None
    if not options:
        return text
    options = [_text(o).strip() for o in options]
    key = _option_key(text)
    exact = [o for o in options if _option_key(o) == key]
    if exact:
        return exact[0]
    prefixed = [o for o in options if _option_key(o) and key.startswith(_option_key(o) + " ")]
    return prefixed[0] if len(prefixed) == 1 else text


def reference_answers(text: str | bytes, example: Mapping[str, Any] | None = None,
                      is_target: bool = False) -> str | list[str]:
    """Targets become every reference answer of the record (its ``references`` list), so
    :func:`squad`, :func:`rouge` and :func:`bleu` can take the best; predictions are stripped.

    Without a record (plain SeqIO evaluation) the target text is the only reference.
    """
    text = _text(text).strip()
    if not is_target:
        return text
    record = _record_of(example)
    references = record.get("references") if record is not None else None
    if not references:
        return text
    out = [_text(r).strip() for r in references]
    return out if text in out else [text, *out]


def positive_f1(positive: str, negative: str, name: str = "f1"
                ) -> Callable[[Sequence[Any], Sequence[Any]], dict[str, float]]:
    """F1 of the class ``positive`` of a two-class task (GLUE reports it for MRPC and QQP, with
    the paraphrase label positive), times 100, under the key ``name``.

    A prediction that is neither ``positive`` nor ``negative`` counts as wrong whatever the
    target: a false negative on a positive example, a false positive on a negative one (T5's
    ``f1_score_with_invalid``).
    """

    def metric(targets: Sequence[Any], predictions: Sequence[Any]) -> dict[str, float]:
        _check_lengths(name, targets, predictions)
        tp = fp = fn = 0
        for target, prediction in zip(targets, predictions, strict=True):
            target, prediction = str(target), str(prediction)
            if target not in (positive, negative):
                raise ValueError(f"{name}: target {target!r} is neither the positive label "
                                 f"{positive!r} nor the negative one {negative!r}.")
            says_positive = (prediction == positive if prediction in (positive, negative)
                             else target != positive)
            tp += target == positive and says_positive
            fp += target != positive and says_positive
            fn += target == positive and not says_positive
        return {name: 0.0 if tp == 0 else 100.0 * 2 * tp / (2 * tp + fp + fn)}

    metric.__name__ = f"positive_f1_{positive}"
    return metric
