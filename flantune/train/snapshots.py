"""A copy of the train state that a background checkpoint write can read while training goes on.

Orbax's async save returns only after its per-array work on the caller's thread: replica slices,
the copy to host memory, save arguments, a few threads started (~0.2 s for T5-small's 763
Adafactor arrays on a 2-core CPU, whatever the storage). In a single-process run flantune instead
dispatches one jitted computation that copies every array into new buffers and computes the
checkpoint fingerprint, and hands that copy to orbax on a writer thread
(`flantune.train.checkpoints.Checkpointer`); the loop waits only for the dispatch.

On GPU and TPU the copy goes to pinned host memory, so it costs host RAM (as orbax's own host
copy does), not accelerator memory. A CPU's memory is host memory already: there the copy stays
in it (orbax reads CPU arrays without another copy), as it does on any device without a
pinned host memory of its own.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Sharding

from flantune.train.fingerprints import PendingFingerprint, pending, tree_checksums

PyTree = Any

HOST_MEMORY_KIND = "pinned_host"


@functools.cache
def has_host_memory(device: jax.Device) -> bool:
    """Whether `device` has a pinned host memory apart from its own (a CPU's pinned host memory
    is the same RAM as its device memory: nothing to gain there)."""
    return device.platform != "cpu" and any(
        memory.kind == HOST_MEMORY_KIND for memory in device.addressable_memories())


def _snapshot_sharding(array: jax.Array) -> Sharding:
    device = next(iter(array.sharding.device_set))
    if has_host_memory(device):
        return array.sharding.with_memory_kind(HOST_MEMORY_KIND)
    return array.sharding


@functools.lru_cache(maxsize=16)
def _snapshot_fn(shardings: tuple[Sharding, ...], moves: tuple[bool, ...]) -> Any:
    """One jitted copy + checksums (`flantune.train.fingerprints`) of a flat list of arrays,
    the copies placed with `shardings`; `moves[i]`: whether leaf i goes to another memory kind
    than its own."""
    def copy_and_sum(leaves: list[jax.Array]) -> tuple[list[jax.Array], list[jax.Array]]:
        # An output in another memory kind than its input is a transfer (a new buffer); in the
        # same memory, jnp.copy keeps jit from handing back the input buffer itself.
        copies = [leaf if move else jnp.copy(leaf)
                  for leaf, move in zip(leaves, moves, strict=True)]
        return copies, tree_checksums(leaves)

    return jax.jit(copy_and_sum, out_shardings=(list(shardings), None))


def snapshot(state: PyTree) -> tuple[PyTree, PendingFingerprint]:
    """A copy of `state` in new buffers (host memory where available) and its fingerprint,
    both still being computed when this returns; `state` may be donated or deleted right after.
    Every process must call it, in the same order (it is one jitted computation)."""
    leaves, treedef = jax.tree.flatten(state)
    shardings = tuple(_snapshot_sharding(leaf) for leaf in leaves)
    moves = tuple(sharding.memory_kind != leaf.sharding.memory_kind
                  for sharding, leaf in zip(shardings, leaves, strict=True))
    copies, checksums = _snapshot_fn(shardings, moves)(leaves)
    return (jax.tree.unflatten(treedef, copies),
            pending(jax.tree.unflatten(treedef, checksums), state))
