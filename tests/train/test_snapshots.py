"""The save snapshot: a copy in new buffers, with the state's values, shardings and fingerprint,
that outlives the state it was taken from."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from flantune.train import snapshots
from flantune.train.checkpoints import CheckpointConfig, Checkpointer
from flantune.train.fingerprints import fingerprint
from flantune.train.snapshots import has_host_memory, snapshot


def _state() -> dict:
    rng = np.random.default_rng(0)
    return {"params": {"w": jnp.asarray(rng.normal(size=(8, 4)), jnp.float32),
                       "b": jnp.asarray(rng.normal(size=(4,)), jnp.bfloat16)},
            "step": jnp.asarray(3, jnp.int32), "rng": jax.random.PRNGKey(5)}


def test_snapshot_copies_every_array_into_new_buffers():
    state = _state()
    copy, _ = snapshot(state)
    assert jax.tree.structure(copy) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(copy), jax.tree.leaves(state), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.unsafe_buffer_pointer() != b.unsafe_buffer_pointer()
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_snapshot_outlives_the_donation_of_the_state():
    state = _state()
    expected = jax.tree.map(np.array, state)
    copy, pending = snapshot(state)
    doubled = jax.jit(lambda t: jax.tree.map(lambda x: x * 2, t), donate_argnums=0)(state)
    jax.block_until_ready(doubled)
    assert all(leaf.is_deleted() for leaf in jax.tree.leaves(state))
    for a, b in zip(jax.tree.leaves(copy), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)
    assert pending.fetch() == fingerprint(jax.tree.map(jnp.asarray, expected))


def test_snapshot_keeps_shardings_and_stays_in_device_memory_on_cpu():
    mesh = jax.make_mesh((1,), ("fsdp",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("fsdp"))
    state = {"w": jax.device_put(jnp.arange(8.0), sharding)}
    copy, _ = snapshot(state)
    assert not has_host_memory(jax.devices()[0])  # a CPU's own memory is host memory
    assert copy["w"].sharding == sharding


def test_a_snapshot_in_pinned_host_memory_is_written_and_restored(tmp_path, monkeypatch):
    """The GPU/TPU path (a copy in the devices' pinned host memory), taken on CPU, which has
    that memory kind too: orbax writes the host arrays and a restore gives the state back."""
    monkeypatch.setattr(snapshots, "has_host_memory", lambda device: True)
    state = _state()
    # A leaf already in host memory (as an offloaded optimizer state would be) is copied too.
    offloaded = state["params"]["w"] + 1
    state["offloaded"] = jax.device_put(
        offloaded, offloaded.sharding.with_memory_kind(snapshots.HOST_MEMORY_KIND))
    expected = jax.tree.map(np.array, state)
    copy, _ = snapshots.snapshot(state)
    assert all(leaf.sharding.memory_kind == snapshots.HOST_MEMORY_KIND
               for leaf in jax.tree.leaves(copy))
    assert (copy["offloaded"].unsafe_buffer_pointer()
            != state["offloaded"].unsafe_buffer_pointer())
    with Checkpointer(tmp_path, CheckpointConfig(save_interval_steps=1)) as checkpointer:
        assert checkpointer.save(1, state)
        for leaf in jax.tree.leaves(state):
            leaf.delete()
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(
            x.shape, x.dtype, sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0])),
            expected)
        restored, _ = checkpointer.restore(1, abstract)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)
