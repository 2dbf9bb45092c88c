"""Novelty filter of Self-Instruct: reject an instruction too close to one already in the pool.

Self-Instruct (``bootstrap_instructions.py``) keeps a generated instruction only when its
ROUGE-L F-measure (``rouge_score``, ``use_stemmer=False``) against every instruction already in
the pool (seed and generated) is at most 0.7; the reference scores every pair with
``RougeScorer.score(new, other)``, which re-tokenizes both texts and fills a Python DP table per
pair: O(n^2) pairs at ~0.1 ms each.

:class:`NoveltyIndex` gives the same decisions and the same maximum scores (bit-for-bit) much
faster:

* Texts are tokenized once with rouge-score's own tokenizer and interned to int ids.
* An inverted index (token id -> item ids, counts) gives, for a query, the multiset overlap
  ``sum_t min(count_query_t, count_item_t)`` with every pool item in a few vectorized numpy
  operations. The overlap bounds the LCS, so the F-measure of the overlap bounds the item's
  ROUGE-L F.
* Items are visited in decreasing bound order and the exact LCS (bit-parallel) is computed only
  while the bound can still beat the best score so far (or, for :meth:`NoveltyIndex.is_novel`,
  still exceed the threshold). A margin keeps float rounding from pruning a deciding pair.
* The exact score uses rouge-score's own precision / recall / ``scoring.fmeasure`` arithmetic,
  so it is the same float (this matters: a mathematical 0.7 such as an LCS of 7 between 7 and 13
  tokens comes out as 0.7000000000000001 and is rejected, while 7 of 10 and 10 comes out as 0.7
  and is kept).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
from rouge_score import scoring, tokenizers

DEFAULT_THRESHOLD = 0.7
# Bounds are compared with this slack: the bound's float F-measure and the exact one are both
# rounded, so a bound equal (mathematically) to a score may print a few ulps below it.
_MARGIN = 1e-9

_TOKENIZER = tokenizers.DefaultTokenizer(use_stemmer=False)


def tokenize(text: str) -> list[str]:
    """rouge-score's ROUGE tokens of ``text`` (lowercased, non-[a-z0-9] split, no stemming)."""
    return _TOKENIZER.tokenize(text)


def _fmeasure(lcs: int, target_len: int, prediction_len: int) -> float:
    """ROUGE-L F from an LCS length, with rouge-score's float arithmetic (``_score_lcs``)."""
    if not target_len or not prediction_len:
        return 0.0
    precision = lcs / prediction_len
    recall = lcs / target_len
    return float(scoring.fmeasure(precision, recall))


# rouge-score only offers a per-pair O(m*n) Python DP table (no batched or bounded API), so the
# LCS is hand-written: Hyyro's bit-parallel LCS, one big-int step per token of the other side.
def _match_masks(tokens: Sequence[int]) -> dict[int, int]:
    """Bit i of ``masks[t]`` is set where ``tokens[i] == t``."""
    masks: dict[int, int] = {}
    for i, t in enumerate(tokens):
        masks[t] = masks.get(t, 0) | (1 << i)
    return masks


def _lcs_length(masks: dict[int, int], length: int, other: Sequence[int]) -> int:
    """LCS length of the sequence behind ``masks`` (``length`` tokens) and ``other``."""
    full = (1 << length) - 1
    v = full
    get = masks.get
    for t in other:
        m = get(t)
        if m:  # a token absent from the pattern leaves v unchanged
            u = v & m
            v = ((v + u) | (v - u)) & full
    return length - v.bit_count()


def rouge_l_fmeasure(target: str, prediction: str) -> float:
    """``RougeScorer(["rougeL"]).score(target, prediction)["rougeL"].fmeasure``, same float."""
    t = tokenize(target)
    p = tokenize(prediction)
    if not t or not p:
        return 0.0
    vocab: dict[str, int] = {}
    ti = [vocab.setdefault(x, len(vocab)) for x in t]
    pi = [vocab.setdefault(x, len(vocab)) for x in p]
    return _fmeasure(_lcs_length(_match_masks(ti), len(ti), pi), len(ti), len(pi))


class _Postings:
    """Growable (item ids, counts) arrays of one token."""

    __slots__ = ("ids", "counts", "size")

    def __init__(self) -> None:
        self.ids = np.empty(4, np.int32)
        self.counts = np.empty(4, np.int32)
        self.size = 0

    def append(self, item: int, count: int) -> None:
        if self.size == self.ids.size:
            self.ids = np.resize(self.ids, 2 * self.size)
            self.counts = np.resize(self.counts, 2 * self.size)
        self.ids[self.size] = item
        self.counts[self.size] = count
        self.size += 1


class NoveltyIndex:
    """A pool of instructions answering "is this one novel?" as Self-Instruct's ROUGE-L filter.

    ``is_novel(text)`` is ``not max(score(text, other) for other in pool) > threshold`` with
    ``score`` rouge-score's ROUGE-L F (target = ``text``, prediction = the pool item).
    """

    def __init__(self, texts: Iterable[str] = (), threshold: float = DEFAULT_THRESHOLD):
        self.threshold = float(threshold)
        self._texts: list[str] = []
        self._tokens: list[list[int]] = []
        self._vocab: dict[str, int] = {}
        self._postings: dict[int, _Postings] = {}
        self._lengths = np.zeros(64, np.float64)
        for text in texts:
            self.add(text)

    def __len__(self) -> int:
        return len(self._texts)

    @property
    def texts(self) -> list[str]:
        """The pool, in insertion order (a copy)."""
        return list(self._texts)

    def _ids(self, text: str, grow: bool) -> list[int]:
        vocab = self._vocab
        if grow:
            return [vocab.setdefault(t, len(vocab)) for t in tokenize(text)]
        # Tokens unseen in the pool match nothing; -1 keeps them in the length.
        return [vocab.get(t, -1) for t in tokenize(text)]

    def add(self, text: str) -> None:
        """Append ``text`` to the pool."""
        item = len(self._texts)
        ids = self._ids(text, grow=True)
        self._texts.append(text)
        self._tokens.append(ids)
        if item == self._lengths.size:
            self._lengths = np.resize(self._lengths, 2 * item)
        self._lengths[item] = len(ids)
        for t, c in Counter(ids).items():
            postings = self._postings.get(t)
            if postings is None:
                postings = self._postings[t] = _Postings()
            postings.append(item, c)

    def _bounds(self, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(items sharing a token with the query, upper bounds of their ROUGE-L F)."""
        n = len(self._texts)
        overlap = np.zeros(n, np.int32)
        for t, c in Counter(ids).items():
            postings = self._postings.get(t)
            if postings is None:
                continue
            items = postings.ids[: postings.size]
            if c == 1:
                overlap[items] += 1  # item ids are unique within one token's postings
            else:
                overlap[items] += np.minimum(postings.counts[: postings.size], c)
        items = np.flatnonzero(overlap)
        hits = overlap[items].astype(np.float64)
        precision = hits / self._lengths[items]
        recall = hits / len(ids)
        return items, 2 * precision * recall / (precision + recall)

    @staticmethod
    def _order(
        items: np.ndarray, bounds: np.ndarray, floor: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Items whose bound reaches ``floor`` (less the margin): decreasing bound, then index."""
        keep = bounds >= floor - _MARGIN
        items, bounds = items[keep], bounds[keep]
        order = np.lexsort((items, -bounds))
        return items[order], bounds[order]

    def most_similar(self, text: str) -> tuple[float, int | None]:
        """(max ROUGE-L F of ``text`` against the pool, lowest index reaching it).

        The same float as the maximum of rouge-score's scores; (0.0, None) on an empty pool.
        """
        if not self._texts:
            return 0.0, None
        ids = self._ids(text, grow=False)
        best, best_item = 0.0, 0  # every item scores at least 0.0; item 0 is the lowest
        if not ids:
            return best, best_item
        items, bounds = self._bounds(ids)
        if not items.size:
            return best, best_item
        masks, length = _match_masks(ids), len(ids)
        # Seed the best with the loosest-bounded item, so that only bounds above it get sorted.
        top = int(np.argmax(bounds))
        first = int(items[top])
        tokens = self._tokens[first]
        best = _fmeasure(_lcs_length(masks, length, tokens), length, len(tokens))
        best_item = first if best > 0.0 else 0
        order, order_bounds = self._order(items, bounds, best)
        for item, bound in zip(order.tolist(), order_bounds.tolist(), strict=True):
            if bound + _MARGIN < best:
                break  # sorted: no later item can reach the best
            if item == first:
                continue
            tokens = self._tokens[item]
            score = _fmeasure(_lcs_length(masks, length, tokens), length, len(tokens))
            if score > best or (score == best and item < best_item):
                best, best_item = score, item
        return best, best_item

    def is_novel(self, text: str) -> bool:
        """``not max score > threshold``; stops at the first pool item over the threshold."""
        ids = self._ids(text, grow=False)
        if not ids or not self._texts:
            return True  # empty query or pool: every score is 0
        items, bounds = self._bounds(ids)
        order, _ = self._order(items, bounds, self.threshold)
        masks, length = _match_masks(ids), len(ids)
        for item in order.tolist():
            tokens = self._tokens[item]
            if _fmeasure(_lcs_length(masks, length, tokens), length, len(tokens)) > self.threshold:
                return False
        return True

    def check_and_add(self, text: str) -> tuple[bool, float, int | None]:
        """(novel, max score, index of the most similar item); ``text`` is added when novel."""
        score, item = self.most_similar(text)
        novel = not score > self.threshold
        if novel:
            self.add(text)
        return novel, score, item
