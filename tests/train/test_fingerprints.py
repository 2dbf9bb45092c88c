"""Checkpoint fingerprints: values against numpy, mismatch detection, and a fingerprint started
before the state's buffers are donated still describing the state as it was."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from flantune.train.fingerprints import (
    PendingFingerprint,
    fingerprint,
    fingerprint_mismatches,
    start_fingerprint,
)


def _state(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"params": {"w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
                       "b": jnp.asarray(rng.normal(size=(3,)), jnp.bfloat16)},
            "step": jnp.asarray(7, jnp.int32)}


def test_fingerprint_is_the_sum_and_absolute_sum_of_each_array():
    state = _state()
    got = fingerprint(state)
    assert sorted(got) == ["params/b", "params/w", "step"]
    w = np.asarray(state["params"]["w"])
    np.testing.assert_allclose(got["params/w"][:2], [w.sum(), np.abs(w).sum()], rtol=1e-6)
    assert got["params/b"][2] == "bfloat16" and got["step"] == [7.0, 7.0, "int32"]


def test_a_changed_array_is_reported_and_a_dtype_change_is_not():
    state = _state()
    stored = fingerprint(state)
    flipped = {**state, "params": {**state["params"],
                                   "w": state["params"]["w"].at[1, 2].add(0.5)}}
    bad = fingerprint_mismatches(stored, flipped)
    assert len(bad) == 1 and bad[0].startswith("params/w")
    recast = {**state, "params": {**state["params"],
                                  "b": state["params"]["b"].astype(jnp.float32) + 1}}
    assert fingerprint_mismatches(stored, recast) == []


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
