"""Feature converters: tokenized examples -> fixed-length model rows, optionally packed.

Pure numpy counterparts of SeqIO's ``EncDecFeatureConverter`` and ``DecoderFeatureConverter``
with the same output keys and semantics, but with best-fit-decreasing packing of a whole buffer
window (see ``flantune.data.packing``) instead of SeqIO's next-fit packing in stream order.

An example is a mapping with ``"targets"`` and usually ``"inputs"``: 1-D integer token arrays
with EOS already appended, and optionally ``"task_index"`` (int). A feature longer than its task
feature length L keeps its first L-1 tokens followed by EOS (what SeqIO's
``append_eos_after_trim`` produces) and is counted in ``ConversionStats.truncated``.

When examples carry ``task_index``, the output also has ``decoder_task_ids`` [rows, decoder
length]: the example's task index on each of its decoder positions and 0 on padding (task 0 is
told apart from padding by ``decoder_loss_weights``). SeqIO has no such feature.

SeqIO's converters work on tf.data pipelines and pack next-fit; they serve as the reference in
the tests, but the packing here must see a whole window at once, so the conversion is re-done in
numpy rather than wrapped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from flantune.data.errors import DataError
from flantune.data.packing import best_fit_decreasing

__all__ = ["ConversionStats", "DecoderFeatureConverter", "EncDecFeatureConverter"]

PAD_ID = 0


@dataclasses.dataclass
class ConversionStats:
    """What a conversion did; add two with ``+`` (or ``merge``) to sum over windows.

    Attributes:
      examples: examples converted.
      rows: rows produced.
      truncated: per task feature ("inputs", "targets"), examples whose feature was truncated;
        for chat conversations also "conversations" (conversations cut), "turns" (assistant
        turns dropped by those cuts), "inside_turn" (conversations whose first trained
        turn was cut inside, keeping its end-of-turn token) and "dropped" (conversations left
        out: their prompt leaves no room in the sequence for a trained token); for preference
        pairs "pairs" (pairs cut) and "dropped_pairs" (pairs left out).
      tokens: per token model feature, real (non-padding) tokens after truncation.
      slots: per token model feature, rows * feature length.
    """

    examples: int = 0
    rows: int = 0
    truncated: dict[str, int] = dataclasses.field(default_factory=dict)
    tokens: dict[str, int] = dataclasses.field(default_factory=dict)
    slots: dict[str, int] = dataclasses.field(default_factory=dict)

    def merge(self, other: ConversionStats) -> ConversionStats:
        """The sum of two stats (counts add feature by feature)."""

        def add(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
            return {k: a.get(k, 0) + b.get(k, 0) for k in {**a, **b}}

        return ConversionStats(
            examples=self.examples + other.examples,
            rows=self.rows + other.rows,
            truncated=add(self.truncated, other.truncated),
            tokens=add(self.tokens, other.tokens),
            slots=add(self.slots, other.slots),
        )

    __add__ = merge

    def truncation_summary(self) -> str | None:
        """One line on what the windows converted so far cut, or None when nothing was."""
        parts = [f"{self.truncated[f]} with {f} truncated" for f in ("inputs", "targets")
                 if self.truncated.get(f)]
        if self.truncated.get("conversations"):
            parts.append(
                f"{self.truncated['conversations']} conversation(s) cut after the last "
                f"assistant turn that fits ({self.truncated.get('turns', 0)} assistant turn(s) "
                f"dropped; {self.truncated.get('inside_turn', 0)} cut inside their first "
                "turn, keeping its end-of-turn token)")
        if self.truncated.get("dropped"):
            parts.append(f"{self.truncated['dropped']} conversation(s) left out: their prompt "
                         "leaves no room for a trained token")
        if self.truncated.get("pairs"):
            parts.append(f"{self.truncated['pairs']} preference pair(s) cut at the end of their "
                         "completions")
        if self.truncated.get("dropped_pairs"):
            parts.append(f"{self.truncated['dropped_pairs']} preference pair(s) left out: their "
                         "prompt leaves no room for a completion token")
        if not parts:
            return None
        return (f"of {self.examples} examples read: " + "; ".join(parts)
                + ". Raise TASK_FEATURE_LENGTHS to keep them whole.")

    def occupancy(self) -> dict[str, float]:
        """Per token model feature, the share of slots holding real tokens."""
        return {k: self.tokens[k] / self.slots[k] for k in self.slots if self.slots[k]}

    def efficiency(self) -> float:
        """Lower bound on rows (max over features of tokens / length) divided by rows used.

        Equal to the largest per-feature occupancy: only the binding feature can fill up.
        """
        occupancy = self.occupancy()
        return max(occupancy.values()) if occupancy else 0.0


@dataclasses.dataclass(frozen=True)
class _Window:
    """Validated, truncated examples of one window, flattened per stream."""

    parts: dict[str, list[np.ndarray]]  # task feature -> per-example token arrays
    lengths: dict[str, np.ndarray]  # task feature -> [n] lengths after truncation
    truncated: dict[str, int]
    task_index: np.ndarray | None  # [n] or None
    weights: list[np.ndarray | None]  # per example: a conversation's loss weights, else None
    starts: np.ndarray  # [n] the decoder input before each example's first target


@dataclasses.dataclass(frozen=True)
class _Layout:
    """Where each token of a packed stream goes: all arrays are per token, in row order."""

    tokens: np.ndarray  # token ids
    example: np.ndarray  # index of the example it belongs to
    position: np.ndarray  # position within its example's segment
    segment: np.ndarray  # segment id within its row (1-based)
    dest: np.ndarray  # flat index into the [rows * length] output


class _Converter:
    """Shared machinery: validation, truncation, packing, row assembly.

    Args:
      pack: pack several examples per row (best-fit decreasing over the window) or give each
        example its own row.
      bos_id: the decoder input before each example's first target (SeqIO's default 0).
      eos_id: appended after truncation.

    Token id 0 is padding and is refused inside examples (SeqIO would take it for padding),
    so real tokens and SeqIO's "token != 0" masks coincide.
    """

    def __init__(self, pack: bool = True, *, bos_id: int = 0, eos_id: int = 1):
        self.pack = pack
        self.bos_id = bos_id
        self.eos_id = eos_id

    # --- validation and truncation ---------------------------------------------------------
    def _window(self, examples: Sequence[Mapping], task_feature_lengths: Mapping[str, int],
                optional: Sequence[str] = (), conversation_length: int | None = None) -> _Window:
        features = list(task_feature_lengths)
        parts: dict[str, list[np.ndarray]] = {f: [] for f in features}
        truncated = dict.fromkeys(features, 0)
        task_index: list[int] = []
        weights: list[np.ndarray | None] = []
        starts = np.full(len(examples), self.bos_id, np.int32)
        has_task_index = bool(examples) and isinstance(examples[0], Mapping) and (
            "task_index" in examples[0])
        for i, example in enumerate(examples):
            if not isinstance(example, Mapping):
                raise DataError(f"example {i} is a {type(example).__name__}, not a mapping of "
                                "features to token arrays.")
            if ("task_index" in example) != has_task_index:
                raise DataError(
                    f"example {i}: 'task_index' is present in some examples of the window but "
                    "not in others; give every example a task_index or none."
                )
            if "task_index" in example:
                task_index.append(self._task_index(example["task_index"], i))
            if "loss_weights" in example:
                if conversation_length is None:
                    raise DataError(
                        f"{self._where(example, i)} is a chat conversation (it has loss "
                        "weights); conversations train decoder-only models. For an "
                        "encoder-decoder model use the one-example-per-turn formats "
                        "('sharegpt', 'oasst') with flantune's dialog templates.")
                tokens, kept = self._conversation(example, i, conversation_length, truncated)
                for feature in features:
                    parts[feature].append(tokens if feature == "targets"
                                          else np.zeros(0, np.int32))
                weights.append(kept)
                starts[i] = self._decoder_start(example, i)
                continue
            weights.append(None)
            for feature in features:
                if feature not in example and feature in optional:
                    tokens = np.zeros(0, dtype=np.int32)
                else:
                    tokens = self._tokens(example, feature, i)
                limit = task_feature_lengths[feature]
                if tokens.size > limit:
                    tokens = np.concatenate([tokens[: limit - 1], [self.eos_id]]).astype(np.int32)
                    truncated[feature] += 1
                parts[feature].append(tokens)
        for feature in features:
            self._check_ids(examples, feature, parts[feature])
        lengths = {f: np.fromiter((t.size for t in parts[f]), np.int64, len(examples))
                   for f in features}
        return _Window(parts, lengths, truncated,
                       np.asarray(task_index, dtype=np.int32) if task_index else None,
                       weights, starts)

    @staticmethod
    def _first_trained(example: Mapping) -> int:
        weights = np.asarray(example["loss_weights"])
        return int(np.argmax(weights > 0)) if weights.any() else weights.size

    def _conversation_fits(self, example: Mapping, limit: int) -> bool:
        """Whether a cut of the conversation to ``limit`` tokens keeps a trained token."""
        return self._first_trained(example) + 2 <= limit or \
            np.size(example["targets"]) <= limit

    def _conversation(self, example: Mapping, i: int, limit: int, truncated: dict[str, int]
                      ) -> tuple[np.ndarray, np.ndarray]:
        """A conversation's targets and loss weights, cut to ``limit`` at the end of the last
        assistant turn that fits. When no trained turn fits whole, the first trained one keeps
        its start and its end-of-turn token (``turn_stops``; else its last token), like SeqIO's
        EOS after a trim. (Conversations whose prompt leaves no room for a trained token are
        left out before: see ``convert``.)"""
        tokens = self._tokens(example, "targets", i)
        kept = np.asarray(example["loss_weights"], np.int32)
        if kept.shape != tokens.shape:
            raise DataError(f"{self._where(example, i)}: 'loss_weights' has shape {kept.shape}, "
                            f"its targets {tokens.shape}; give one weight per target token.")
        if tokens.size <= limit:
            return tokens, kept
        ends = np.asarray(example.get("turn_ends", ()), np.int64)
        fitting = ends[ends <= limit]
        truncated["conversations"] = truncated.get("conversations", 0) + 1
        if fitting.size and kept[:fitting.max()].any():
            cut = int(fitting.max())
            truncated["turns"] = truncated.get("turns", 0) + int((ends > cut).sum())
            return tokens[:cut], kept[:cut]
        first = self._first_trained(example)
        turn = int(np.searchsorted(ends, first, side="right"))  # the turn `first` is in
        stops = np.asarray(example.get("turn_stops", ends - 1), np.int64)
        stop = int(stops[turn]) if turn < stops.size else tokens.size - 1
        truncated["inside_turn"] = truncated.get("inside_turn", 0) + 1
        truncated["turns"] = truncated.get("turns", 0) + int(ends.size - min(turn + 1, ends.size))
        if stop < limit:  # the turn fits up to its end-of-turn token: cut right after it
            return tokens[:stop + 1], kept[:stop + 1]
        keep = np.r_[np.arange(limit - 1), stop]
        return tokens[keep], kept[keep]

    def _decoder_start(self, example: Mapping, i: int) -> int:
        value = example.get("decoder_start", self.bos_id)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise DataError(f"{self._where(example, i)}: 'decoder_start' must be a "
                            f"non-negative token id; got {value!r}.")
        return int(value)

    @staticmethod
    def _where(example: Mapping, i: int) -> str:
        return f"example {i}" + (f" (task_index {example['task_index']})"
                                 if "task_index" in example else "")

    def _tokens(self, example: Mapping, feature: str, i: int) -> np.ndarray:
        if feature not in example:
            raise DataError(f"{self._where(example, i)} has no '{feature}' feature; the task "
                            f"must produce it (features present: {sorted(example)}).")
        tokens = np.asarray(example[feature])
        if tokens.ndim != 1 or (tokens.size and not np.issubdtype(tokens.dtype, np.integer)):
            raise DataError(f"{self._where(example, i)}: '{feature}' must be a 1-D array of "
                            f"integer token ids; got shape {tokens.shape} and dtype "
                            f"{tokens.dtype}.")
        if feature == "targets" and tokens.size == 0:
            raise DataError(f"{self._where(example, i)}: 'targets' is empty; it must at least "
                            "hold EOS.")
        return tokens.astype(np.int32, copy=False)

    def _check_ids(self, examples: Sequence[Mapping], feature: str,
                   parts: list[np.ndarray]) -> None:
        """Refuses ids <= the padding id (checked on the whole window at once)."""
        if not parts or np.concatenate(parts).min(initial=PAD_ID + 1) > PAD_ID:
            return
        i = next(i for i, t in enumerate(parts) if t.min(initial=PAD_ID + 1) <= PAD_ID)
        raise DataError(
            f"{self._where(examples[i], i)}: '{feature}' contains token id "
            f"{int(parts[i].min())} at position {int(np.argmin(parts[i]))}; ids must be > "
            f"{PAD_ID} (the padding id). Check the vocabulary and the tokenization step."
        )

    @staticmethod
    def _task_index(value: object, i: int) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise DataError(f"example {i}: 'task_index' must be a non-negative int; got "
                            f"{value!r}.")
        return int(value)

    @staticmethod
    def _check_lengths(task_feature_lengths: Mapping[str, int], allowed: Sequence[str],
                       required: Sequence[str]) -> None:
        unknown = set(task_feature_lengths) - set(allowed)
        missing = set(required) - set(task_feature_lengths)
        if unknown or missing:
            raise DataError(
                f"task_feature_lengths {dict(task_feature_lengths)} must have keys "
                f"{sorted(required)} (allowed: {sorted(allowed)}); unknown: {sorted(unknown)}, "
                f"missing: {sorted(missing)}."
            )
        for k, v in task_feature_lengths.items():
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise DataError(f"task_feature_lengths['{k}'] must be a positive int; got {v!r}.")

    # --- packing and row assembly ----------------------------------------------------------
    def _bins(self, lengths: np.ndarray, capacities: Sequence[int]) -> list[list[int]]:
        if self.pack:
            return best_fit_decreasing(lengths, capacities)
        return [[i] for i in range(lengths.shape[0])]

    @staticmethod
    def _layout(bins: list[list[int]], parts: list[np.ndarray], row_length: int) -> _Layout:
        """Lays examples out row by row, segments in bin order, each at the end of the last."""
        order = np.fromiter((i for b in bins for i in b), np.int64)
        bin_sizes = np.fromiter((len(b) for b in bins), np.int64, len(bins))
        row_of = np.repeat(np.arange(len(bins)), bin_sizes)  # per segment, in layout order
        first_of_row = np.cumsum(bin_sizes) - bin_sizes  # layout index of each row's first
        segment = np.arange(order.size) - first_of_row[row_of]
        length = np.fromiter((parts[i].size for i in order), np.int64, order.size)
        start = np.cumsum(length) - length  # of each segment in the concatenated tokens
        offset = start - start[first_of_row][row_of]  # of each segment within its row
        tokens = (np.concatenate([parts[i] for i in order]) if order.size
                  else np.zeros(0, np.int32))
        position = np.arange(tokens.size) - np.repeat(start, length)
        dest = np.repeat(row_of * row_length + offset, length) + position
        return _Layout(tokens=tokens, example=np.repeat(order, length), position=position,
                       segment=np.repeat(segment + 1, length), dest=dest)

    @staticmethod
    def _scatter(rows: int, length: int, dest: np.ndarray, values: np.ndarray) -> np.ndarray:
        out = np.zeros(rows * length, dtype=np.int32)
        out[dest] = values
        return out.reshape(rows, length)

    def _decoder_inputs(self, rows: int, length: int, layout: _Layout,
                        targets: np.ndarray, starts: np.ndarray | None = None) -> np.ndarray:
        """Targets shifted right by one with BOS (or the example's ``decoder_start``) in front,
        per segment if packed (as SeqIO)."""
        first = layout.position == 0
        start_ids = (np.full(int(first.sum()), self.bos_id, np.int32) if starts is None
                     else starts[layout.example[first]])
        if not self.pack:  # SeqIO shifts the padded row: the first pad slot gets the last token.
            shifted = np.full_like(targets, PAD_ID)
            shifted[:, 0] = self.bos_id
            shifted[layout.dest[first] // length, 0] = start_ids
            shifted[:, 1:] = targets[:, :-1]
            return shifted
        shifted = np.empty_like(layout.tokens)
        shifted[1:] = layout.tokens[:-1]
        shifted[first] = start_ids
        return self._scatter(rows, length, layout.dest, shifted)


class EncDecFeatureConverter(_Converter):
    """Encoder-decoder rows with the keys and semantics of ``seqio.EncDecFeatureConverter``.

    Keys: ``encoder_input_tokens``, ``decoder_target_tokens``, ``decoder_input_tokens`` (targets
    shifted right per segment, BOS first), ``decoder_loss_weights`` (1 on real target tokens);
    when packed also ``encoder_segment_ids``, ``encoder_positions``, ``decoder_segment_ids``,
    ``decoder_positions``; ``decoder_task_ids`` when examples carry ``task_index``. An example's
    inputs and targets share a row and a segment id.
    """

    TASK_FEATURES = ("inputs", "targets")

    def model_feature_lengths(self, task_feature_lengths: Mapping[str, int], *,
                              with_task_ids: bool = False) -> dict[str, int]:
        """Model feature -> length, for the given task feature lengths."""
        self._check_lengths(task_feature_lengths, self.TASK_FEATURES, self.TASK_FEATURES)
        enc, dec = task_feature_lengths["inputs"], task_feature_lengths["targets"]
        lengths = {"encoder_input_tokens": enc, "decoder_target_tokens": dec,
                   "decoder_input_tokens": dec, "decoder_loss_weights": dec}
        if self.pack:
            lengths.update(encoder_segment_ids=enc, decoder_segment_ids=dec,
                           encoder_positions=enc, decoder_positions=dec)
        if with_task_ids:
            lengths["decoder_task_ids"] = dec
        return lengths

    def convert(self, examples: Sequence[Mapping], task_feature_lengths: Mapping[str, int]
                ) -> tuple[dict[str, np.ndarray], ConversionStats]:
        """Truncates, packs (if enabled) and lays out one window; arrays are [rows, length]."""
        self._check_lengths(task_feature_lengths, self.TASK_FEATURES, self.TASK_FEATURES)
        window = self._window(examples, task_feature_lengths)
        for i in np.flatnonzero(window.lengths["inputs"] == 0)[:1]:
            raise DataError(f"example {i}: 'inputs' is empty; an encoder-decoder example needs "
                            "at least one input token (EOS).")
        enc, dec = task_feature_lengths["inputs"], task_feature_lengths["targets"]
        bins = self._bins(np.stack([window.lengths["inputs"], window.lengths["targets"]], 1),
                          [enc, dec])
        rows = len(bins)
        enc_layout = self._layout(bins, window.parts["inputs"], enc)
        dec_layout = self._layout(bins, window.parts["targets"], dec)
        scatter_enc = lambda v: self._scatter(rows, enc, enc_layout.dest, v)  # noqa: E731
        scatter_dec = lambda v: self._scatter(rows, dec, dec_layout.dest, v)  # noqa: E731

        targets = scatter_dec(dec_layout.tokens)
        out = {
            "encoder_input_tokens": scatter_enc(enc_layout.tokens),
            "decoder_target_tokens": targets,
            "decoder_input_tokens": self._decoder_inputs(rows, dec, dec_layout, targets),
            "decoder_loss_weights": scatter_dec(np.ones_like(dec_layout.tokens)),
        }
        if self.pack:
            out["encoder_segment_ids"] = scatter_enc(enc_layout.segment)
            out["encoder_positions"] = scatter_enc(enc_layout.position)
            out["decoder_segment_ids"] = scatter_dec(dec_layout.segment)
            out["decoder_positions"] = scatter_dec(dec_layout.position)
        if window.task_index is not None:
            out["decoder_task_ids"] = scatter_dec(window.task_index[dec_layout.example])
        stats = ConversionStats(
            examples=len(examples), rows=rows, truncated=window.truncated,
            tokens={"encoder_input_tokens": int(enc_layout.tokens.size),
                    "decoder_target_tokens": int(dec_layout.tokens.size)},
            slots={"encoder_input_tokens": rows * enc, "decoder_target_tokens": rows * dec},
        )
        return out, stats


class DecoderFeatureConverter(_Converter):
    """Decoder-only rows with the keys and semantics of ``seqio.DecoderFeatureConverter``.

    With ``"inputs"`` in the task feature lengths this is SeqIO's ``PrefixLMFeatureConverter``:
    inputs and targets (each truncated to its own length) are concatenated into one sequence of
    length inputs + targets; ``decoder_causal_attention`` is 1 on the inputs and on the one
    position after them (where the first target is predicted); the loss is on the targets only
    unless ``loss_on_targets_only=False``. An example without ``"inputs"`` then counts as having
    empty inputs (plain language modelling inside a prefix-LM batch, as SeqIO does for empty
    inputs). Without ``"inputs"`` in the lengths this is ``LMFeatureConverter`` (targets only,
    loss on every real token, no ``decoder_causal_attention``).

    Keys: ``decoder_target_tokens``, ``decoder_input_tokens``, ``decoder_loss_weights``,
    ``decoder_causal_attention`` (prefix LM only); when packed also ``decoder_segment_ids`` and
    ``decoder_positions``; ``decoder_task_ids`` when examples carry ``task_index``.
    """

    TASK_FEATURES = ("inputs", "targets")

    def __init__(self, pack: bool = True, *, loss_on_targets_only: bool = True, bos_id: int = 0,
                 eos_id: int = 1):
        super().__init__(pack, bos_id=bos_id, eos_id=eos_id)
        self.loss_on_targets_only = loss_on_targets_only

    def model_feature_lengths(self, task_feature_lengths: Mapping[str, int], *,
                              with_task_ids: bool = False) -> dict[str, int]:
        """Model feature -> length; the decoder length is the sum of the task lengths."""
        self._check_lengths(task_feature_lengths, self.TASK_FEATURES, ("targets",))
        length = sum(task_feature_lengths.values())
        names = ["decoder_target_tokens", "decoder_input_tokens", "decoder_loss_weights"]
        if "inputs" in task_feature_lengths:
            names.append("decoder_causal_attention")
        if self.pack:
            names += ["decoder_segment_ids", "decoder_positions"]
        if with_task_ids:
            names.append("decoder_task_ids")
        return dict.fromkeys(names, length)

    def convert(self, examples: Sequence[Mapping], task_feature_lengths: Mapping[str, int]
                ) -> tuple[dict[str, np.ndarray], ConversionStats]:
        """Truncates, concatenates, packs (if enabled) and lays out one window."""
        self._check_lengths(task_feature_lengths, self.TASK_FEATURES, ("targets",))
        prefix_lm = "inputs" in task_feature_lengths
        if not prefix_lm:
            for i, example in enumerate(examples):
                if isinstance(example, Mapping) and np.size(example.get("inputs", ())):
                    raise DataError(
                        f"example {i} has 'inputs' but task_feature_lengths has no 'inputs' "
                        "length, so they would be dropped; add an 'inputs' length (prefix LM)."
                    )
        length = sum(task_feature_lengths.values())
        read = len(examples)
        examples = [ex for ex in examples if not (isinstance(ex, Mapping) and "loss_weights" in ex
                                                 and not self._conversation_fits(ex, length))]
        dropped = read - len(examples)
        window = self._window(examples, task_feature_lengths, optional=("inputs",),
                              conversation_length=length)
        if dropped:
            window.truncated["dropped"] = dropped
        n = len(examples)
        input_len = window.lengths["inputs"] if prefix_lm else np.zeros(n, np.int64)
        if prefix_lm:
            parts = [np.concatenate([a, b]) for a, b in
                     zip(window.parts["inputs"], window.parts["targets"], strict=True)]
        else:
            parts = window.parts["targets"]
        bins = self._bins((input_len + window.lengths["targets"])[:, None], [length])
        rows = len(bins)
        layout = self._layout(bins, parts, length)
        scatter = lambda v: self._scatter(rows, length, layout.dest, v)  # noqa: E731

        targets = scatter(layout.tokens)
        is_input = layout.position < input_len[layout.example]
        loss = (~is_input if self.loss_on_targets_only else np.ones_like(is_input)).astype(
            np.int32)
        if any(w is not None for w in window.weights):  # conversations bring their own mask
            order = [i for b in bins for i in b]
            explicit = np.concatenate([
                window.weights[i] if window.weights[i] is not None
                else np.full(parts[i].size, -1, np.int32) for i in order])
            loss = np.where(explicit >= 0, explicit, loss)
        out = {
            "decoder_target_tokens": targets,
            "decoder_input_tokens": self._decoder_inputs(rows, length, layout, targets,
                                                         window.starts),
            "decoder_loss_weights": scatter(loss),
        }
        if prefix_lm:
            causal = layout.position <= input_len[layout.example]
            out["decoder_causal_attention"] = scatter(causal.astype(np.int32))
        if self.pack:
            out["decoder_segment_ids"] = scatter(layout.segment)
            out["decoder_positions"] = scatter(layout.position)
        if window.task_index is not None:
            out["decoder_task_ids"] = scatter(window.task_index[layout.example])
        stats = ConversionStats(
            examples=read, rows=rows, truncated=window.truncated,
            tokens={"decoder_target_tokens": int(layout.tokens.size)},
            slots={"decoder_target_tokens": rows * length},
        )
        return out, stats
