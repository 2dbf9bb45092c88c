"""Preference pairs -> decoder rows: the chosen and the rejected sequence of a pair side by side.

A pair's two sequences are consecutive segments of one row: the k-th pair of a row has its
chosen sequence in segment ``2k - 1`` and its rejected one in segment ``2k``, so a pair never
straddles rows, batches or microbatches, and the loss reads a pair's two log-probabilities from
adjacent segments. With ``pack`` the pairs are packed best-fit-decreasing (several per row);
without, each row holds one pair. Each sequence has its own positions and attention segment.

Sequences follow the causal-LM convention of chat tasks: ``decoder_input_tokens`` start with the
sequence's first token, ``decoder_target_tokens`` are the tokens after it, and
``decoder_loss_weights`` are 1 on the completion (targets at or after the prompt's length).

A pair longer than the row (``task_feature_lengths["targets"]``) is cut at the end of its
completions: the longer one down to half the row (or to what the shorter leaves), the other to
the rest; TRL's collator cuts each sequence to ``max_length`` likewise, keeping the start. A pair
whose prompt leaves no completion token in its share is left out. Both are counted in
``ConversionStats.truncated`` (``"pairs"``, ``"dropped_pairs"``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from flantune.data.errors import DataError
from flantune.data.feature_converters import PAD_ID, ConversionStats, _Converter

PAIR_KEYS = ("chosen", "rejected", "prompt_length")


def pair_budget(chosen: int, rejected: int, length: int) -> tuple[int, int]:
    """Target lengths of a pair's two sequences (``chosen``/``rejected`` targets each) in a row
    of ``length``: unchanged when they fit, else the longer cut first (see the module doc)."""
    if chosen + rejected <= length:
        return chosen, rejected
    half = length // 2
    if chosen <= half:
        return chosen, length - chosen
    if rejected <= half:
        return length - rejected, rejected
    return half, length - half


class PreferenceFeatureConverter(_Converter):
    """Decoder-only rows of preference pairs (see the module docstring).

    Keys: ``decoder_target_tokens``, ``decoder_input_tokens``, ``decoder_loss_weights``,
    ``decoder_segment_ids``, ``decoder_positions`` and, when examples carry ``task_index``,
    ``decoder_task_ids``.
    """

    TASK_FEATURES = ("targets",)

    def model_feature_lengths(self, task_feature_lengths: Mapping[str, int], *,
                              with_task_ids: bool = False) -> dict[str, int]:
        self._check_pair_lengths(task_feature_lengths)
        length = task_feature_lengths["targets"]
        names = ["decoder_target_tokens", "decoder_input_tokens", "decoder_loss_weights",
                 "decoder_segment_ids", "decoder_positions"]
        if with_task_ids:
            names.append("decoder_task_ids")
        return dict.fromkeys(names, length)

    def _check_pair_lengths(self, task_feature_lengths: Mapping[str, int]) -> None:
        if "inputs" in task_feature_lengths:
            raise DataError(
                f"task_feature_lengths {dict(task_feature_lengths)}: preference pairs are whole "
                "decoder sequences with no separate inputs; give {'targets': L}, L the row "
                "length that holds a pair's prompt + chosen and prompt + rejected.")
        self._check_lengths(task_feature_lengths, self.TASK_FEATURES, self.TASK_FEATURES)
        if task_feature_lengths["targets"] < 2:
            raise DataError("task_feature_lengths['targets'] must be at least 2: a row holds a "
                            "pair of sequences.")

    def _pair(self, example: Mapping, i: int) -> tuple[np.ndarray, np.ndarray, int]:
        if not isinstance(example, Mapping) or any(k not in example for k in PAIR_KEYS):
            where = self._where(example, i) if isinstance(example, Mapping) else f"example {i}"
            found = sorted(example) if isinstance(example, Mapping) else type(example).__name__
            raise DataError(f"{where} is not a preference pair (it has {found}); a preference "
                            "run trains on preference tasks only (@flantune.preference_task).")
        chosen = self._tokens(example, "chosen", i)
        rejected = self._tokens(example, "rejected", i)
        prompt = example["prompt_length"]
        if isinstance(prompt, bool) or not isinstance(prompt, (int, np.integer)) or not (
                0 <= prompt < min(chosen.size, rejected.size)):
            where = self._where(example, i) + (f" ({example['record']})" if "record" in example
                                               else "")
            raise DataError(f"{where}: 'prompt_length' must be an int below "
                            f"both sequences' lengths ({chosen.size}, {rejected.size}); got "
                            f"{prompt!r}.")
        return chosen, rejected, int(prompt)

    def convert(self, examples: Sequence[Mapping], task_feature_lengths: Mapping[str, int]
                ) -> tuple[dict[str, np.ndarray], ConversionStats]:
        """Cuts, packs (if enabled) and lays out one window of pairs."""
        self._check_pair_lengths(task_feature_lengths)
        length = task_feature_lengths["targets"]
        has_task_index = bool(examples) and isinstance(examples[0], Mapping) and (
            "task_index" in examples[0])
        parts: list[np.ndarray] = []
        weights: list[np.ndarray] = []
        starts: list[int] = []
        task_index: list[int] = []
        sources: list[int] = []  # per kept pair, its example's index
        truncated = {"pairs": 0, "dropped_pairs": 0}
        for i, example in enumerate(examples):
            chosen, rejected, prompt = self._pair(example, i)
            if isinstance(example, Mapping) and ("task_index" in example) != has_task_index:
                raise DataError(f"example {i}: 'task_index' is present in some examples of the "
                                "window but not in others; give every example a task_index or "
                                "none.")
            kept = pair_budget(chosen.size - 1, rejected.size - 1, length)
            if min(kept) < max(prompt, 1):  # a cut sequence keeps no completion target
                truncated["dropped_pairs"] += 1
                continue
            sources.append(i)
            if kept != (chosen.size - 1, rejected.size - 1):
                truncated["pairs"] += 1
            for tokens, size in ((chosen, kept[0]), (rejected, kept[1])):
                targets = tokens[1:size + 1]
                parts.append(targets)
                weights.append((np.arange(targets.size) + 1 >= prompt).astype(np.int32))
                starts.append(int(tokens[0]))
            if has_task_index:
                task_index.append(self._task_index(example["task_index"], i))
        self._check_pair_ids(examples, sources, parts, starts)
        n = len(parts) // 2
        pair_lengths = np.fromiter((parts[2 * k].size + parts[2 * k + 1].size
                                    for k in range(n)), np.int64, n)
        pair_bins = self._bins(pair_lengths[:, None], [length])
        bins = [[j for k in b for j in (2 * k, 2 * k + 1)] for b in pair_bins]
        rows = len(bins)
        layout = self._layout(bins, parts, length)
        scatter = lambda v: self._scatter(rows, length, layout.dest, v)  # noqa: E731
        first = layout.position == 0
        shifted = np.empty_like(layout.tokens)
        shifted[1:] = layout.tokens[:-1]
        shifted[first] = np.asarray(starts, np.int32)[layout.example[first]]
        order = [j for b in bins for j in b]
        out = {
            "decoder_target_tokens": scatter(layout.tokens),
            "decoder_input_tokens": scatter(shifted),
            "decoder_loss_weights": scatter(np.concatenate([weights[j] for j in order])
                                            if order else np.zeros(0, np.int32)),
            "decoder_segment_ids": scatter(layout.segment),
            "decoder_positions": scatter(layout.position),
        }
        if has_task_index:
            out["decoder_task_ids"] = scatter(np.asarray(task_index, np.int32)[
                layout.example // 2])
        stats = ConversionStats(
            examples=len(examples), rows=rows,
            truncated={k: v for k, v in truncated.items() if v},
            tokens={"decoder_target_tokens": int(layout.tokens.size)},
            slots={"decoder_target_tokens": rows * length})
        return out, stats

    def _check_pair_ids(self, examples: Sequence[Mapping], sources: list[int],
                        parts: list[np.ndarray], starts: list[int]) -> None:
        """Refuses ids <= the padding id in either sequence of a pair (checked on the whole
        window at once)."""
        lows = [min(int(starts[j]), int(parts[j].min(initial=PAD_ID + 1)))
                for j in range(len(parts))]
        if min(lows, default=PAD_ID + 1) > PAD_ID:
            return
        j = next(j for j, low in enumerate(lows) if low <= PAD_ID)
        example = examples[sources[j // 2]]
        where = self._where(example, sources[j // 2])
        if "record" in example:
            where += f" ({example['record']})"
        raise DataError(f"{where}: its {('chosen', 'rejected')[j % 2]} sequence contains token "
                        f"id {lows[j]}; ids must be > {PAD_ID} (the padding id). Check the "
                        "vocabulary and the tokenization step.")


def pair_slots(length: int) -> int:
    """The most pairs a row of ``length`` target slots can hold (each sequence has at least one
    target): the number of (chosen, rejected) segment pairs the loss reads per row."""
    return length // 2
