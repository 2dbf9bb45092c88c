"""Checkpoint checksums: values against an independent numpy implementation, every single-bit
flip detected, the same result on any mesh, format-1 fingerprints still checked, and a
fingerprint started before the state's buffers are donated still describing the state."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from flantune.train.fingerprints import (
    FingerprintFormatError,
    PendingFingerprint,
    array_checksum,
    fingerprint,
    fingerprint_mismatches,
    start_fingerprint,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
MASK = 0xFFFFFFFF


def _state(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"params": {"w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
                       "b": jnp.asarray(rng.normal(size=(3,)), jnp.bfloat16)},
            "step": jnp.asarray(7, jnp.int32)}


def _numpy_fmix32(h: np.ndarray) -> np.ndarray:
    h = h.astype(np.uint64)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & MASK
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & MASK
    return h ^ (h >> 16)


def numpy_checksum(value: np.ndarray) -> str:
    """The documented checksum, written independently with numpy and Python integers."""
    value = np.ascontiguousarray(value)
    if value.dtype == np.bool_:
        words = value.astype(np.uint64).ravel()
    else:
        unsigned = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint32}[value.dtype.itemsize]
        words = value.view(unsigned).astype(np.uint64).ravel()  # little-endian word order
    k = _numpy_fmix32((np.arange(words.size, dtype=np.uint64) + 0x9E3779B9) & MASK)
    s1 = int(np.sum((words * (k | 1)) & MASK, dtype=np.uint64)) & MASK
    s2 = int(np.sum(_numpy_fmix32(words ^ k), dtype=np.uint64)) & MASK
    return f"{s1:08x}{s2:08x}"


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16", "int32", "int8", "uint8",
                                   "bool", "float8_e4m3fn"])
def test_checksum_matches_an_independent_numpy_implementation(dtype):
    rng = np.random.default_rng(1)
    value = rng.normal(size=(5, 7, 3)) * 40
    host = (value > 0) if dtype == "bool" else value.astype(np.dtype(getattr(
        ml_dtypes, dtype, dtype)))
    got = fingerprint({"x": jnp.asarray(host)})["arrays"]["x"]
    assert got == {"dtype": dtype, "shape": [5, 7, 3], "checksum": numpy_checksum(host)}


def test_keys_and_scalars_are_checksummed_by_their_bits():
    state = {"raw": jax.random.PRNGKey(3), "typed": jax.random.key(3),
             "scalar": jnp.asarray(2.5, jnp.float32)}
    got = fingerprint(state)["arrays"]
    assert got["raw"]["checksum"] == numpy_checksum(np.asarray(state["raw"]))
    assert got["typed"]["checksum"] == got["raw"]["checksum"]  # same key data
    assert got["scalar"]["checksum"] == numpy_checksum(np.asarray(2.5, np.float32))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8"])
def test_every_single_bit_flip_changes_the_checksum(dtype):
    """Exhaustive: each bit of each element of a small array, flipped alone."""
    rng = np.random.default_rng(2)
    host = (rng.normal(size=(6, 5)) * 30).astype(np.dtype(getattr(ml_dtypes, dtype, dtype)))
    unsigned = {1: np.uint8, 2: np.uint16, 4: np.uint32}[host.dtype.itemsize]
    bits = host.dtype.itemsize * 8
    words = host.view(unsigned).ravel()
    flipped = np.repeat(words[None], words.size * bits, axis=0)
    rows = np.arange(flipped.shape[0])
    flipped[rows, rows // bits] ^= (np.ones_like(rows) << (rows % bits)).astype(unsigned)
    batch = jnp.asarray(flipped.view(host.dtype).reshape(-1, *host.shape))
    sums = np.asarray(jax.jit(jax.vmap(array_checksum))(batch))
    original = np.asarray(array_checksum(jnp.asarray(host)))
    assert sums.shape == (host.size * bits, 2)
    assert np.all(sums[:, 0] != original[0]) and np.all(sums[:, 1] != original[1])


def test_a_changed_array_is_reported_and_a_dtype_change_is_not():
    state = _state()
    stored = fingerprint(state)
    w = np.asarray(state["params"]["w"])
    one_bit = w.copy()
    one_bit.view(np.uint32)[1, 2] ^= 1  # the smallest change a float can have
    changed = {**state, "params": {**state["params"], "w": jnp.asarray(one_bit)}}
    bad = fingerprint_mismatches(stored, changed)
    assert len(bad) == 1 and bad[0].startswith("params/w (checksum saved ")
    # Two elements swapped: the sums of values are equal, the checksum is not.
    swapped = w.copy()
    swapped[0, 0], swapped[0, 1] = w[0, 1], w[0, 0]
    assert fingerprint_mismatches(stored, {**changed, "params": {**state["params"],
                                                                  "w": jnp.asarray(swapped)}})
    recast = {**state, "params": {**state["params"],
                                  "b": state["params"]["b"].astype(jnp.float32) + 1}}
    assert fingerprint_mismatches(stored, recast) == []


def test_format_one_fingerprints_are_still_checked():
    """A checkpoint written before format 2: [sum, sum of |x|, dtype] per array."""
    state = _state()
    legacy = {key: [float(np.sum(np.asarray(v, np.float32))),
                    float(np.sum(np.abs(np.asarray(v, np.float32)))), str(v.dtype)]
              for key, v in [("params/w", state["params"]["w"]),
                             ("params/b", state["params"]["b"]), ("step", state["step"])]}
    assert fingerprint_mismatches(legacy, state) == []
    changed = {**state, "params": {**state["params"], "w": state["params"]["w"] + 1}}
    assert [m.split(" ")[0] for m in fingerprint_mismatches(legacy, changed)] == ["params/w"]


def test_an_unknown_fingerprint_format_is_a_clear_error():
    with pytest.raises(FingerprintFormatError, match=r"format 3 is unknown.*newer flantune"):
        fingerprint_mismatches({"format": 3, "arrays": {}}, _state())


def test_a_started_fingerprint_survives_donation_of_the_state():
    state = _state(1)
    want = fingerprint(state)

    @functools.partial(jax.jit, donate_argnums=0)
    def overwrite(tree):
        return jax.tree.map(lambda x: x * 0 + 3, tree)

    pending = start_fingerprint(state)
    assert isinstance(pending, PendingFingerprint)
    state = overwrite(state)  # the next train step reuses the buffers
    assert pending.fetch() == want
    assert fingerprint(state) != want


def test_checksums_are_identical_on_every_mesh():
    """On 8 host devices (a subprocess): arrays sharded 8-way, 4x2 and replicated give the
    numpy reference's checksum."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT),
           "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    result = subprocess.run([sys.executable, __file__, "meshes"], env=env, cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    assert result.stdout.strip().endswith("3 meshes agree"), result.stdout


def _meshes_main() -> None:
    from jax.sharding import NamedSharding, PartitionSpec

    assert jax.device_count() == 8, jax.devices()
    rng = np.random.default_rng(3)
    host = {"w": rng.normal(size=(16, 8)).astype(np.float32),
            "b": rng.normal(size=(8, 4)).astype(ml_dtypes.bfloat16),
            "odd": rng.normal(size=(5, 3)).astype(np.float32)}
    want = {key: numpy_checksum(value) for key, value in host.items()}
    layouts = {
        "fsdp8": (jax.make_mesh((8,), ("x",)), {"w": PartitionSpec("x"),
                                                "b": PartitionSpec("x"),
                                                "odd": PartitionSpec()}),
        "4x2": (jax.make_mesh((4, 2), ("x", "y")), {"w": PartitionSpec("x", "y"),
                                                    "b": PartitionSpec("y", "x"),
                                                    "odd": PartitionSpec()}),
        "replicated": (jax.make_mesh((8,), ("x",)), {key: PartitionSpec() for key in host}),
    }
    for name, (mesh, specs) in layouts.items():
        placed = {key: jax.device_put(value, NamedSharding(mesh, specs[key]))
                  for key, value in host.items()}
        got = {key: entry["checksum"] for key, entry in fingerprint(placed)["arrays"].items()}
        assert got == want, (name, got, want)
    print(f"{len(layouts)} meshes agree")


if __name__ == "__main__":
    {"meshes": _meshes_main}[sys.argv[1]]()
