"""Per-array checksums of a saved train state, checked after every restore.

Orbax stores no checksum of array data, and its zstd-compressed float chunks barely compress,
so a flipped bit in a checkpoint file mostly changes one value and loads silently. Each step
directory therefore holds a JSON item (format 2)::

    {"format": 2, "arrays": {array path: {"dtype": ..., "shape": [...], "checksum": hex}}}

The checksum is exact and integer: every array's bits are read as uint32 words (16- and 8-bit
types widened, 64-bit ones split into two words) and, with k_i = fmix32(i + c) a hash of the
word's flat index i (MurmurHash3's finalizer, a bijection of uint32),

    s1 = sum_i w_i * (k_i | 1)    and    s2 = sum_i fmix32(w_i ^ k_i)    (mod 2**32).

Changing any one word (so any single flipped bit) changes both sums: the multiplier of s1 is odd,
hence invertible mod 2**32, and fmix32 is a bijection. Several changed words go unnoticed only by
a 64-bit coincidence. Both are sums of per-element terms mod 2**32, so shards reduce to partial
sums in any order and mesh with the same result: a checkpoint written on 8 devices verifies on 1.

The sums are dispatched (asynchronously) when a save starts, in one jitted computation together
with the save's snapshot (`flantune.train.snapshots`), and fetched to the host by orbax's
background writer, so the training loop never waits for them. Checkpoints of format 1 (a list
`[sum, sum of |x|, dtype]` per array, no "format" key) are still checked the old way.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax import lax

PyTree = Any

FORMAT = 2
_INDEX_OFFSET = 0x9E3779B9  # c: keeps index 0 from hashing to 0
_FMIX_MULTIPLIERS = (0x85EBCA6B, 0xC2B2AE35)
# Format 1: float sums compared with this relative tolerance.
LEGACY_RTOL = 1e-4
_log = logging.getLogger(__name__)


class FingerprintFormatError(ValueError):
    """A fingerprint item this version of flantune cannot check (written by a newer one)."""


def path_key(path: tuple[Any, ...]) -> str:
    """`a/b/0` for a pytree key path."""
    return jax.tree_util.keystr(path, simple=True, separator="/")


def flat_items(tree: PyTree) -> list[tuple[str, Any]]:
    """(path key, leaf) of every leaf of `tree`."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(path_key(path), leaf) for path, leaf in leaves]


def _fmix32(h: jax.Array) -> jax.Array:
    """MurmurHash3's 32-bit finalizer (a bijection of uint32)."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(_FMIX_MULTIPLIERS[0])
    h = h ^ (h >> 13)
    h = h * jnp.uint32(_FMIX_MULTIPLIERS[1])
    return h ^ (h >> 16)


def words(x: jax.Array) -> jax.Array:
    """The bits of `x` as uint32 words: x's shape, plus a trailing axis of 2 for 64-bit types;
    traceable. 16- and 8-bit types are zero-extended, bool is 0/1, sub-byte integers are
    widened to int8 first, PRNG keys are read as their key data."""
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    dtype = np.dtype(x.dtype)
    if dtype == np.bool_:
        return x.astype(jnp.uint32)
    if jax.dtypes.itemsize_bits(dtype) < 8 and jnp.issubdtype(dtype, jnp.integer):
        x = x.astype(jnp.int8 if jnp.issubdtype(dtype, jnp.signedinteger) else jnp.uint8)
        dtype = np.dtype(x.dtype)
    unsigned = {8: jnp.uint8, 16: jnp.uint16, 32: jnp.uint32, 64: jnp.uint32}.get(
        jax.dtypes.itemsize_bits(dtype))
    if unsigned is None or jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError(f"checkpoint checksums do not support {dtype} arrays")
    return lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)


def _flat_index(shape: tuple[int, ...]) -> jax.Array:
    """Row-major flat index (mod 2**32) of every element of an array of `shape`, built from
    iotas so that a sharded array needs no reshape (no data movement)."""
    index = jnp.zeros(shape, jnp.uint32)
    stride = 1
    for axis in reversed(range(len(shape))):
        index = index + lax.broadcasted_iota(jnp.uint32, shape, axis) * jnp.uint32(
            stride % 2**32)
        stride *= shape[axis]
    return index


def _in_device_memory(x: jax.Array) -> jax.Array:
    """`x`, moved to device memory if it is in host memory (an offloaded optimizer state): the
    index hashes are computed in device memory, and XLA mixes no memory spaces in one op."""
    if getattr(jax.typeof(x), "memory_space", None) == jax.memory.Space.Host:
        return jax.device_put(x, jax.memory.Space.Device)
    return x


def array_checksum(x: jax.Array) -> jax.Array:
    """[s1, s2] (uint32) of `x`'s bits (see the module docstring); traceable."""
    w = words(_in_device_memory(x))
    k = _fmix32(_flat_index(w.shape) + jnp.uint32(_INDEX_OFFSET))
    s1 = jnp.sum(w * (k | jnp.uint32(1)), dtype=jnp.uint32)
    s2 = jnp.sum(_fmix32(w ^ k), dtype=jnp.uint32)
    return jnp.stack([s1, s2])


def tree_checksums(tree: PyTree) -> PyTree:
    """`array_checksum` of every array of `tree`; traceable, for use inside a jit."""
    return jax.tree.map(array_checksum, tree)


_checksums = jax.jit(tree_checksums)


def checksum_hex(value: Any) -> str:
    """The 16 hex digits stored for an [s1, s2] pair."""
    s1, s2 = (int(v) for v in np.asarray(value, np.uint32).ravel())
    return f"{s1:08x}{s2:08x}"


def dtype_names(state: PyTree) -> dict[str, str]:
    """{array path: dtype name} of `state`."""
    return dict(flat_items(jax.tree.map(lambda x: str(x.dtype), state)))


@dataclasses.dataclass(frozen=True)
class PendingFingerprint:
    """Checksums still on device (being computed) and each array's dtype and shape."""

    checksums: PyTree
    dtypes: dict[str, str]
    shapes: dict[str, list[int]]

    def fetch(self) -> dict[str, Any]:
        """Waits for the checksums and returns the JSON-ready fingerprint item."""
        values = jax.device_get(self.checksums)
        return {"format": FORMAT, "arrays": {
            key: {"dtype": self.dtypes[key], "shape": self.shapes[key],
                  "checksum": checksum_hex(value)}
            for key, value in flat_items(values)}}


def pending(checksums: PyTree, state: PyTree) -> PendingFingerprint:
    """A `PendingFingerprint` of `state` from its dispatched `tree_checksums`."""
    items = flat_items(state)
    return PendingFingerprint(checksums, {key: str(leaf.dtype) for key, leaf in items},
                              {key: [int(n) for n in leaf.shape] for key, leaf in items})


def start_fingerprint(state: PyTree) -> PendingFingerprint:
    """Dispatches the checksums of a (sharded, possibly multi-process) `state` without waiting
    for them; every process must call it, in the same order. `state` may be donated after."""
    return pending(_checksums(state), state)


def fingerprint(state: PyTree) -> dict[str, Any]:
    """The fingerprint item (format 2) of `state`."""
    return start_fingerprint(state).fetch()


def fingerprint_mismatches(stored: Mapping[str, Any], state: PyTree) -> list[str]:
    """The arrays of `state` whose bits differ from the fingerprint `stored` with them (format
    2), or whose sums differ beyond float rounding (format 1). Arrays restored in another dtype
    than saved cannot be compared and are skipped. Raises FingerprintFormatError for a format
    this version does not know."""
    if "format" not in stored:
        return _legacy_mismatches(stored, state)
    if stored.get("format") != FORMAT or not isinstance(stored.get("arrays"), Mapping):
        raise FingerprintFormatError(
            f"fingerprint format {stored.get('format')!r} is unknown to this version of "
            f"flantune (it writes and checks format {FORMAT}); the checkpoint was written by a "
            "newer flantune: restore it with that version")
    current = fingerprint(state)["arrays"]
    bad, skipped = [], 0
    for key, saved in stored["arrays"].items():
        now = current.get(key)
        if now is None or now["dtype"] != saved["dtype"]:
            skipped += 1
            continue
        if now["checksum"] != saved["checksum"]:
            bad.append(f"{key} (checksum saved {saved['checksum']}, read {now['checksum']})")
    if skipped:
        _log.info("%d array(s) restored in another dtype than saved are not verified.", skipped)
    return bad


def _legacy_mismatches(stored: Mapping[str, Any], state: PyTree) -> list[str]:
    """Format 1: [sum, sum of |x|, dtype] per array, compared with LEGACY_RTOL."""
    def sums(x: jax.Array) -> jax.Array:
        x = x.astype(jnp.float32)
        return jnp.stack([jnp.sum(x), jnp.sum(jnp.abs(x))])

    current = {key: [float(v[0]), float(v[1])]
               for key, v in flat_items(jax.device_get(jax.jit(
                   lambda t: jax.tree.map(sums, t))(state)))}
    dtypes = dtype_names(state)
    bad = []
    for key, entry in stored.items():
        if not (isinstance(entry, list) and len(entry) == 3):
            raise FingerprintFormatError(
                f"fingerprint entry {key!r} is neither format 1 ([sum, sum of |x|, dtype]) nor "
                f"part of format {FORMAT}; the fingerprint item is damaged or of another tool")
        total, magnitude, dtype = entry
        if key not in current or dtypes[key] != dtype:  # restored in another dtype
            continue
        now_total, now_magnitude = current[key]
        scale = max(abs(magnitude), abs(now_magnitude), 1e-30)
        if not (np.isfinite(now_total) and np.isfinite(now_magnitude)) or (
                abs(now_magnitude - magnitude) > LEGACY_RTOL * scale
                or abs(now_total - total) > LEGACY_RTOL * scale):
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
