"""Best-fit-decreasing bin packing of examples into fixed-length rows.

SeqIO packs greedily in stream order (next-fit: a row is closed as soon as one example does not
fit), which leaves the tail of many rows empty. Here a whole buffer window is packed at once:
examples are taken by decreasing size and each goes into the open row that suits it best among
those it fits in. Rows may have several capacities (encoder and decoder length for an
encoder-decoder model); an example fits a row only if it fits every one of them.

No library in the environment offers multi-dimensional bin packing (SeqIO and tf.data only pack
next-fit), hence the hand-written loop; the per-example work is vectorised over open rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["best_fit_decreasing", "packing_order"]


def packing_order(lengths: np.ndarray, capacities: Sequence[int]) -> np.ndarray:
    """The order in which ``best_fit_decreasing`` places examples.

    Sizes are normalised by capacity and an example's size is its largest normalised length.
    Examples whose largest normalised length is in the binding dimension (the one with the most
    total load, which bounds the number of rows from below) and the others each form a group
    sorted by decreasing size (ties: increasing index). The two groups are merged so that each
    advances through its own total size at the same pace. Sorting everything in one decreasing
    run would leave the small examples of the non-binding kind (e.g. short inputs with long
    targets) for last, where no row has room for them in the binding dimension any more.
    """
    lengths, caps = _validated(lengths, capacities)
    n = lengths.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    scaled = _common_scale(lengths, caps)
    binding = int(np.argmax(scaled.sum(axis=0)))
    size = scaled.max(axis=1)
    in_binding_group = scaled[:, binding] >= size
    groups = []
    for group in (np.flatnonzero(in_binding_group), np.flatnonzero(~in_binding_group)):
        group = group[np.lexsort([group, -size[group]])]
        done_before = np.cumsum(size[group]) - size[group]
        groups.append((group.tolist(), done_before.tolist(), size[group].sum().item()))
    (first, first_done, first_total), (second, second_done, second_total) = groups
    if not first or not second or first_total == 0 or second_total == 0:
        return np.asarray(first + second, dtype=np.int64)
    # Pace done / total, compared exactly: both scaled by first_total * second_total.
    keyed = ([(d * second_total, 0, j) for j, d in enumerate(first_done)]
             + [(d * first_total, 1, j) for j, d in enumerate(second_done)])
    members = (first, second)
    return np.asarray([members[g][j] for _, g, j in sorted(keyed)], dtype=np.int64)


def _common_scale(lengths: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """Lengths normalised by capacity, exactly: as integer multiples of 1 / lcm(capacities).

    Falls back to floating point if the integers could overflow (very unusual capacities).
    """
    common = math.lcm(*caps.tolist())
    if common * max(int(lengths.sum()), 1) < 2**62:
        return lengths * np.asarray([common // c for c in caps.tolist()], dtype=np.int64)
    return lengths / caps


def best_fit_decreasing(lengths: np.ndarray, capacities: Sequence[int]) -> list[list[int]]:
    """Bins of example indices; lengths is [n, num_features]; every bin fits every capacity.

    Examples are placed in ``packing_order`` (decreasing size). With one dimension each goes
    into the open bin with the least room left that still fits it (classic best-fit decreasing;
    ties: the oldest bin). With several, each goes, among the open bins where it fits in every
    dimension, into the one whose remaining room is best aligned with it: the largest dot
    product of capacity-normalised example and room vectors (the "dot product" rule of Panigrahy
    et al., "Heuristics for Vector Bin Packing", 2011; ties: the oldest bin). A new bin is opened
    if none fits. On windows of the demo mixture this rule and order pack 1 to 3 points tighter
    than best fit on a weighted size in plain decreasing order, and never looser on synthetic
    windows with one or two binding dimensions.

    Bins come out in the order they were opened, each listing its examples in increasing index.
    The result depends only on ``lengths`` and ``capacities``.
    """
    lengths, caps = _validated(lengths, capacities)
    n, dims = lengths.shape
    if n == 0:
        return []
    order = packing_order(lengths, caps)
    # Dot products of capacity-normalised vectors, in exact integers (so the choice is the
    # same on every machine): sum_k room_k * need_k * (lcm / cap_k) ** 2.
    common = math.lcm(*caps.tolist())
    if dims * common**2 < 2**62:
        weighted = lengths * np.asarray([(common // c) ** 2 for c in caps.tolist()], np.int64)
    else:  # Very unusual capacities: floating point.
        weighted = lengths / caps.astype(np.float64) ** 2

    # Smallest remaining example per dimension from position i on: a bin with less room than
    # that in any dimension can never take another example and is closed.
    suffix_min = np.minimum.accumulate(lengths[order][::-1], axis=0)[::-1]
    suffix_min = np.vstack([suffix_min, np.full((1, dims), np.iinfo(np.int64).max)])

    # Open bins live in the first `num_open` rows of preallocated arrays.
    open_ids = np.empty(n, dtype=np.int64)
    open_room = np.empty((n, dims), dtype=np.int64)
    num_open = 0
    bins: list[list[int]] = []
    for rank, idx in enumerate(order):
        need = lengths[idx]
        room = open_room[:num_open]
        fits = room[:, 0] >= need[0]
        for k in range(1, dims):
            fits &= room[:, k] >= need[k]
        candidates = np.flatnonzero(fits)
        if candidates.size:
            if dims == 1:
                slot = candidates[np.argmin(room[candidates, 0])]
            else:
                slot = candidates[np.argmax((room[candidates] * weighted[idx]).sum(axis=1))]
            room[slot] -= need
            bins[open_ids[slot]].append(int(idx))
        else:
            open_ids[num_open] = len(bins)
            open_room[num_open] = caps - need
            num_open += 1
            bins.append([int(idx)])
        if rank % 16:  # Closing bins only saves work: check now and then.
            continue
        useful = np.all(open_room[:num_open] >= suffix_min[rank + 1], axis=1)
        if not useful.all():
            kept = int(useful.sum())
            open_ids[:kept] = open_ids[:num_open][useful]
            open_room[:kept] = open_room[:num_open][useful]
            num_open = kept
    return [sorted(b) for b in bins]


def _validated(lengths: np.ndarray, capacities: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.asarray(lengths)
    if lengths.ndim == 1:
        lengths = lengths[:, None]
    caps = np.asarray(capacities, dtype=np.int64)
    if lengths.ndim != 2 or caps.ndim != 1 or lengths.shape[1] != caps.shape[0]:
        raise ValueError(
            f"lengths must be [num_examples, {caps.size}] for {caps.size} capacities; "
            f"got shape {lengths.shape}. Pass one column per packed feature."
        )
    if lengths.size and not np.issubdtype(lengths.dtype, np.integer):
        raise ValueError(f"lengths must be integers; got dtype {lengths.dtype}.")
    lengths = lengths.astype(np.int64, copy=False)
    if (caps <= 0).any():
        raise ValueError(f"capacities must be positive; got {caps.tolist()}.")
    if (lengths < 0).any():
        row, col = np.argwhere(lengths < 0)[0]
        raise ValueError(f"example {row} has negative length {lengths[row, col]} in dimension "
                         f"{col}.")
    too_long = lengths > caps
    if too_long.any():
        row, col = np.argwhere(too_long)[0]
        raise ValueError(
            f"example {row} has length {lengths[row, col]} in dimension {col}, more than the "
            f"capacity {caps[col]}; truncate examples before packing."
        )
    return lengths, caps
