"""Per-array fingerprints of a saved train state, checked after every restore.

Orbax stores no checksum of array data, so flipped bytes in a checkpoint would load silently.
Each step directory therefore holds a JSON item `{array path: [sum, sum of |x|, dtype]}`. The
sums are dispatched (asynchronously) when a save starts, in one process together with the
save's snapshot (`flantune.train.snapshots`), and fetched to the host by orbax's background
writer, so the training loop never waits for them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

PyTree = Any

FINGERPRINT_RTOL = 1e-4


def path_key(path: tuple[Any, ...]) -> str:
    """`a/b/0` for a pytree key path."""
    return jax.tree_util.keystr(path, simple=True, separator="/")


def flat_items(tree: PyTree) -> list[tuple[str, Any]]:
    """(path key, leaf) of every leaf of `tree`."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(path_key(path), leaf) for path, leaf in leaves]


def tree_sums(tree: PyTree) -> PyTree:
    """[sum, sum of |x|] (f32) of every array of `tree`; traceable, for use inside a jit."""
    def stats(x: jax.Array) -> jax.Array:
        x = x.astype(jnp.float32)
        return jnp.stack([jnp.sum(x), jnp.sum(jnp.abs(x))])

    return jax.tree.map(stats, tree)


_sums = jax.jit(tree_sums)


def dtype_names(state: PyTree) -> dict[str, str]:
    """{array path: dtype name} of `state`."""
    return dict(flat_items(jax.tree.map(lambda x: str(x.dtype), state)))


@dataclasses.dataclass(frozen=True)
class PendingFingerprint:
    """Fingerprint sums still on device (being computed) and each array's dtype."""

    sums: PyTree
    dtypes: dict[str, str]

    def fetch(self) -> dict[str, list[float | str]]:
        """Waits for the sums and returns the JSON-ready fingerprint."""
        sums = jax.device_get(self.sums)
        return {key: [float(value[0]), float(value[1]), self.dtypes[key]]
                for key, value in flat_items(sums)}


def start_fingerprint(state: PyTree) -> PendingFingerprint:
    """Dispatches the fingerprint of a (sharded, possibly multi-process) `state` without waiting
    for it; every process must call it, in the same order. `state` may be donated afterwards."""
    return PendingFingerprint(_sums(state), dtype_names(state))


def fingerprint(state: PyTree) -> dict[str, list[float | str]]:
    """``{array path: [sum, sum of |x|, dtype]}`` of `state`."""
    return start_fingerprint(state).fetch()


def fingerprint_mismatches(stored: Mapping[str, Sequence[float | str]],
                           state: PyTree) -> list[str]:
    """The arrays of `state` whose fingerprint differs from `stored` beyond float rounding."""
    current = fingerprint(state)
    bad = []
    for key, (total, magnitude, dtype) in stored.items():
        if key not in current or current[key][2] != dtype:  # restored in another dtype
            continue
        now_total, now_magnitude, _ = current[key]
        scale = max(abs(magnitude), abs(now_magnitude), 1e-30)
        if not (np.isfinite(now_total) and np.isfinite(now_magnitude)) or (
                abs(now_magnitude - magnitude) > FINGERPRINT_RTOL * scale
                or abs(now_total - total) > FINGERPRINT_RTOL * scale):
            bad.append(f"{key} (saved sum {total:.6g}, |sum| {magnitude:.6g}; read "
                       f"{now_total:.6g}, {now_magnitude:.6g})")
    return bad


class FingerprintHandler(ocp.handlers.JsonCheckpointHandler):
    """Writes a `PendingFingerprint` as orbax's JSON item, fetching it in the background commit
    (orbax runs `_save_fn` off the caller's thread); read back with `ocp.args.JsonRestore`."""

    async def _save_fn(self, x: PendingFingerprint, directory: epath.Path) -> None:
        await super()._save_fn(x.fetch(), directory)


@ocp.args.register_with_handler(FingerprintHandler, for_save=True)
@dataclasses.dataclass
class FingerprintSave(ocp.args.CheckpointArgs):
    """Save args of the fingerprint item."""

    item: PendingFingerprint
