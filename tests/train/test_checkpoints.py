"""Tests for flantune.train.checkpoints.

Tests that need several devices or processes run this file as a script in a subprocess (with
XLA_FLAGS forcing 8 host devices, or with jax.distributed over 2 processes); see `_main`.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec, SingleDeviceSharding

from flantune.models import (
    DecoderConfig,
    T5Config,
    build_model,
    load_hf_checkpoint,
    model_params,
    save_hf_checkpoint,
)
from flantune.models.convert import save_params
from flantune.testing import free_port
from flantune.train.checkpoint_errors import DETAIL_LOG
from flantune.train.checkpoints import (
    CheckpointConfig,
    Checkpointer,
    CheckpointError,
    UnreadableCheckpointError,
    check_free_space,
    load_initial_params,
)
from flantune.train.fingerprints import FingerprintHandler

# Reading a damaged checkpoint fails one read while orbax's other reads are still in flight; their
# completion callbacks later find orbax's event loop closed (harmless, inside orbax).
pytestmark = pytest.mark.filterwarnings(
    r"ignore:Exception ignored in. None[\s\S]*Event loop is closed"
    r":pytest.PytestUnraisableExceptionWarning")

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_T5 = T5Config(vocab_size=64, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32,
                   num_encoder_layers=2, num_decoder_layers=2)
TINY_DECODER = DecoderConfig(vocab_size=64, emb_dim=16, num_heads=2, num_kv_heads=1, head_dim=8,
                             mlp_dim=32, num_layers=2, max_position_embeddings=64)
OPTIMIZERS = {
    "adamw": lambda: optax.adamw(1e-3),
    "adafactor": lambda: optax.adafactor(1e-3),
    # Empty states (clipping, schedules) next to non-empty ones in nested tuples.
    "clipped_adamw_schedule": lambda: optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.adamw(optax.warmup_cosine_decay_schedule(0.0, 1e-3, 10, 100))),
}


def make_state(config=TINY_T5, optimizer: str = "adamw", seed: int = 0) -> dict:
    """A train state whose optimizer state is not all zeros (one real update applied)."""
    return jax.tree.map(jnp.asarray, _host_state(config, optimizer, seed))


def random_params(config, seed: int = 0) -> dict:
    """The model's parameter tree (names, shapes, dtypes from the model itself) filled with
    seeded random values; much faster than running the model's initializers."""
    abstract = model_params(nnx.eval_shape(lambda: build_model(config, nnx.Rngs(0))))
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda leaf: rng.standard_normal(leaf.shape).astype(leaf.dtype), abstract)


@functools.cache
def _host_state(config, optimizer: str, seed: int) -> dict:
    params = random_params(config, seed)
    tx = OPTIMIZERS[optimizer]()

    @jax.jit
    def init_and_update(params):
        opt_state = tx.init(params)
        grads = jax.tree.map(lambda p: jnp.full_like(p, 0.01) + 0.001 * p, params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    params, opt_state = init_and_update(params)
    state = {"params": params, "opt_state": opt_state, "step": jnp.asarray(7, jnp.int32),
             "rng": jax.random.PRNGKey(seed)}
    return to_numpy(state)


def abstract_of(tree, sharding_fn=lambda leaf: SingleDeviceSharding(jax.devices()[0])):
    return jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding_fn(leaf)),
        tree)


def to_numpy(tree):
    return jax.tree.map(lambda leaf: np.array(leaf), tree)


def assert_trees_equal(actual, expected) -> None:
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(actual),
                            jax.tree.leaves(expected), strict=True):
        name = jax.tree_util.keystr(path)
        assert np.asarray(a).dtype == np.asarray(b).dtype, name
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)


def _wait_for(condition: Callable[[], bool], seconds: float = 60) -> bool:
    """Whether `condition()` becomes true within `seconds` (polled every 50 ms)."""
    for _ in range(int(seconds / 0.05)):
        if condition():
            return True
        threading.Event().wait(0.05)
    return False


def _wait_for_temporary_directory(directory: Path, step: int, seconds: float = 60) -> bool:
    """Whether orbax's temporary directory for `step` appears within `seconds`."""
    return _wait_for(
        lambda: any(p.name.startswith(f"{step}.") for p in Path(directory).iterdir()), seconds)


def sync_config(**kwargs) -> CheckpointConfig:
    return CheckpointConfig(**{"save_interval_steps": 1, "async_save": False, **kwargs})


# --------------------------------------------------------------------------- round trip / async


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("async_save", [False, True])
def test_round_trip_restores_every_leaf_and_the_data_state(tmp_path, optimizer, async_save):
    state = make_state(optimizer=optimizer)
    expected = to_numpy(state)
    data_state = json.dumps({"position": 123, "epoch": 1})
    config = CheckpointConfig(save_interval_steps=10, async_save=async_save)
    with Checkpointer(tmp_path / "model", config) as checkpointer:
        assert checkpointer.save(10, state, data_state=data_state)
        checkpointer.wait_until_finished()
        assert checkpointer.all_steps() == [10]
    # A new Checkpointer (as after a restart) finds and restores the step.
    with Checkpointer(tmp_path / "model", config) as checkpointer:
        assert checkpointer.latest_step() == 10
        restored, restored_data_state = checkpointer.restore(None, abstract_of(state))
    assert restored_data_state == data_state
    assert_trees_equal(restored, jax.tree.map(jnp.asarray, expected))
    assert_trees_equal(restored["opt_state"], state["opt_state"])  # namedtuples rebuilt


def test_restore_without_data_state_returns_none(tmp_path):
    state = make_state()
    with Checkpointer(tmp_path, sync_config()) as checkpointer:
        checkpointer.save(1, state)
        restored, data_state = checkpointer.restore(1, abstract_of(state))
    assert data_state is None
    assert_trees_equal(restored, state)


def test_abstract_leaves_without_sharding_go_to_the_default_device(tmp_path):
    state = make_state()
    abstract = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype), state)
    with Checkpointer(tmp_path, sync_config()) as checkpointer:
        checkpointer.save(1, state)
        restored, _ = checkpointer.restore(1, abstract)
    assert_trees_equal(restored, state)
    assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(restored))


def test_restore_casts_to_the_requested_dtype(tmp_path):
    state = make_state()
    abstract = abstract_of(state)
    abstract["params"] = jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, jnp.bfloat16, sharding=leaf.sharding),
        abstract["params"])
    with Checkpointer(tmp_path, sync_config()) as checkpointer:
        checkpointer.save(1, state)
        restored, _ = checkpointer.restore(1, abstract)
    assert_trees_equal(restored["params"],
                       jax.tree.map(lambda p: p.astype(jnp.bfloat16), state["params"]))


def _gated_async_round_trip(tmp_path: Path, gate: threading.Event,
                            while_held: Callable[[Checkpointer], None]) -> None:
    """Saves asynchronously while something in the write waits for `gate`, deletes the state's
    buffers right after `save` returns (the caller may donate them), runs `while_held`, opens
    the gate and checks the restored step against the state as it was."""
    state = make_state(optimizer="adafactor")
    expected = to_numpy(state)
    checkpointer = Checkpointer(tmp_path, CheckpointConfig(save_interval_steps=1))
    try:
        assert checkpointer.save(3, state, data_state='{"p": 3}')
        for leaf in jax.tree.leaves(state):
            leaf.delete()
        while_held(checkpointer)
        gate.set()
        assert checkpointer.latest_step() == 3  # a background save counts from its start
        checkpointer.wait_until_finished()
        assert checkpointer.all_steps() == [3]
        restored, data_state = checkpointer.restore(3, abstract_of(expected))
    finally:
        gate.set()
        checkpointer.close()
    assert data_state == '{"p": 3}'
    assert_trees_equal(restored, jax.tree.map(jnp.asarray, expected))


def test_async_save_returns_before_the_write_finishes(tmp_path, monkeypatch):
    """The background write is held at a gate: if `save` waited for the write it could not
    return before the gate opens, and the step would already be complete."""
    gate = threading.Event()
    original_write = ocp.JsonCheckpointHandler._save_fn

    async def gated_write(self, item, directory):
        await asyncio.to_thread(gate.wait, 60)
        await original_write(self, item, directory)

    monkeypatch.setattr(ocp.JsonCheckpointHandler, "_save_fn", gated_write)

    def while_held(checkpointer: Checkpointer) -> None:
        # Orbax writes into a temporary directory (created in the background too) and renames
        # it once everything is written.
        assert not checkpointer.step_path(3).exists()
        assert _wait_for_temporary_directory(tmp_path, 3)

    _gated_async_round_trip(tmp_path, gate, while_held)


def _gate_orbax_save(monkeypatch, gate: threading.Event, calls: list[str]) -> None:
    """Makes orbax's `CheckpointManager.save` wait for `gate`, recording the calling thread."""
    original_save = ocp.CheckpointManager.save

    def gated_save(self, *args, **kwargs):
        calls.append(threading.current_thread().name)
        assert gate.wait(60), "the test never opened the gate"
        return original_save(self, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", gated_save)


def test_async_save_hands_orbax_a_snapshot_on_a_writer_thread(tmp_path, monkeypatch):
    """`save` returns while orbax's own save call is still held at a gate, so the caller does
    not wait for orbax's per-array work; the snapshot it hands over outlives the state."""
    gate, calls = threading.Event(), []
    _gate_orbax_save(monkeypatch, gate, calls)

    def while_held(checkpointer: Checkpointer) -> None:
        assert _wait_for(lambda: bool(calls))  # the writer thread reaches orbax's save
        assert len(calls) == 1 and calls[0].startswith("flantune-checkpoint")

    _gated_async_round_trip(tmp_path, gate, while_held)


def test_save_in_thread_off_calls_orbax_on_the_callers_thread(tmp_path, monkeypatch):
    gate, calls = threading.Event(), []
    gate.set()
    _gate_orbax_save(monkeypatch, gate, calls)
    config = CheckpointConfig(save_interval_steps=1, save_in_thread=False)
    with Checkpointer(tmp_path, config) as checkpointer:
        assert checkpointer.save(2, make_state())
        assert calls == [threading.current_thread().name]
        checkpointer.wait_until_finished()
        assert checkpointer.all_steps() == [2]


@pytest.mark.parametrize("save_in_thread", [True, False])
def test_a_failed_write_is_raised_naming_the_step(tmp_path, monkeypatch, save_in_thread):
    """On the writer thread the error reaches the caller at its next checkpointer call."""
    def failing_save(self, *args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(ocp.CheckpointManager, "save", failing_save)
    config = CheckpointConfig(save_interval_steps=1, save_in_thread=save_in_thread)
    checkpointer = Checkpointer(tmp_path, config)
    message = (rf"^could not write checkpoint step 4 to {re.escape(str(tmp_path / '4'))} "
               r"\(OSError: \[Errno 5\] Input/output error\); check the permissions.*Full error: "
               rf"{re.escape(str(tmp_path / DETAIL_LOG))}$")
    try:
        if save_in_thread:
            assert checkpointer.save(4, make_state())
            with pytest.raises(CheckpointError, match=message):
                checkpointer.should_save(5)
            assert checkpointer.latest_step() is None  # raised once, then usable again
        else:
            with pytest.raises(CheckpointError, match=message):
                checkpointer.save(4, make_state())
    finally:
        checkpointer.close()


# The error TensorStore raises for a full disk (from a real run on a full tmpfs), and the
# OSError orbax's JSON items raise.
TENSORSTORE_DISK_FULL = (
    'RESOURCE_EXHAUSTED: Error writing "params.w/0.0" in OCDBT database at local file "{}": '
    "Failed to write 5709 bytes to file 17: No space left on device [os_error_code='28']")


def _fail_step_writes(monkeypatch, step: int, form: str) -> None:
    """Makes the background commit of `step` raise a full disk after its arrays are written
    (the fingerprint item is written last), as an OSError or in TensorStore's words; orbax
    logs its own traceback of it too."""
    original = FingerprintHandler._save_fn

    async def full_disk(self, item, directory):
        if f"{step}.orbax-checkpoint-tmp" in str(directory):
            logging.getLogger("absl").error("commit failed", exc_info=OSError(
                errno.ENOSPC, "No space left on device"))
            if form == "oserror":
                raise OSError(errno.ENOSPC, "No space left on device")
            raise ValueError(TENSORSTORE_DISK_FULL.format(directory))
        await original(self, item, directory)

    monkeypatch.setattr(FingerprintHandler, "_save_fn", full_disk)


@pytest.mark.parametrize("form", ["oserror", "tensorstore"])
@pytest.mark.parametrize("way", ["sync", "async", "thread"])
def test_a_full_disk_mid_save_is_one_error_and_the_last_step_stays(tmp_path, monkeypatch,
                                                                   caplog, way, form):
    state = make_state()
    config = CheckpointConfig(save_interval_steps=1, keep=1, async_save=way != "sync",
                              save_in_thread=way == "thread")
    _fail_step_writes(monkeypatch, 2, form)
    checkpointer = Checkpointer(tmp_path, config)
    try:
        checkpointer.save(1, state, data_state='{"step": 1}')
        with pytest.raises(CheckpointError) as info:
            checkpointer.save(2, make_state(seed=2), data_state='{"step": 2}')
            checkpointer.wait_until_finished()  # the background write's error surfaces here
    finally:
        checkpointer.close()
    message = str(info.value)
    assert "\n" not in message and len(message.replace(str(tmp_path), "")) < 550, message
    assert re.fullmatch(
        rf"MODEL_DIR {re.escape(str(tmp_path))} is full: writing checkpoint step 2 failed with "
        r"[0-9.e-]+ GiB free; a checkpoint of this run needs about [0-9.e-]+ GiB, and up to 2 "
        r"are kept at once \([0-9.e-]+ GiB\)\. The last complete checkpoint, step 1 "
        rf"\({re.escape(str(tmp_path / '1'))}\), is intact; the partial write "
        r"2\.orbax-checkpoint-tmp\S* is removed at the next start\. Free some space or point "
        r"MODEL_DIR at a larger disk, then resume\. Full error: "
        rf"{re.escape(str(tmp_path / DETAIL_LOG))}", message), message
    detail = (tmp_path / DETAIL_LOG).read_text()
    assert "No space left on device" in detail and "Traceback" in detail
    # orbax's own log records of the failure (when its logging emits them) stay off the console.
    assert not [r for r in caplog.records if "No space left" in (r.exc_text or r.getMessage())]
    with Checkpointer(tmp_path, sync_config(keep=1)) as checkpointer:  # as after a restart
        assert checkpointer.all_steps() == [1]
        restored, data_state = checkpointer.restore(None, abstract_of(state))
    assert data_state == '{"step": 1}'
    assert_trees_equal(restored, state)


@pytest.mark.parametrize(("options", "copies"), [
    ({}, 4),  # the default: keep=3, plus one being written
    ({"keep": 1}, 2),
    ({"keep": 2, "keep_best": 3, "best_metric": "accuracy"}, 6),
])
def test_free_space_check_counts_kept_copies_and_one_being_written(tmp_path, monkeypatch,
                                                                  options, copies):
    usage = shutil.disk_usage(tmp_path)
    free = {"bytes": 0}
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=free["bytes"]))
    config = CheckpointConfig(**options)
    gib = 2**30
    free["bytes"] = copies * gib
    check_free_space(tmp_path, gib, config=config)
    free["bytes"] = copies * gib - gib // 2
    with pytest.raises(CheckpointError, match=(
            rf"MODEL_DIR {re.escape(str(tmp_path))} has {copies - 0.5:.2f} GiB free, but "
            rf"checkpoints of this run need about {copies:.2f} GiB more: up to {copies} at once "
            rf"\(keep={config.keep}.* \+ 1 being written\) of 1.00 GiB .*lower "
            "CheckpointConfig.keep")):
        check_free_space(tmp_path, gib, config=config)
    with Checkpointer(tmp_path / "run", config) as checkpointer, pytest.raises(CheckpointError):
        checkpointer.check_free_space(gib)


def test_free_space_check_counts_the_steps_already_on_disk(tmp_path, monkeypatch):
    with Checkpointer(tmp_path, sync_config()) as checkpointer:
        checkpointer.save(1, make_state())
        checkpointer.save(2, make_state())
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=2000))
    check_free_space(tmp_path, 1000)  # 2 of the 4 copies are there already
    with pytest.raises(CheckpointError, match=r"up to 4 at once .*; 2 already on disk"):
        check_free_space(tmp_path, 1001)


# --------------------------------------------------------------------------- when / what to keep


def test_should_save_follows_the_interval_and_force_overrides_it(tmp_path):
    state = make_state()
    with Checkpointer(tmp_path, sync_config(save_interval_steps=3)) as checkpointer:
        assert [s for s in range(1, 10) if checkpointer.should_save(s)] == [3, 6, 9]
        assert not checkpointer.save(4, state)
        assert checkpointer.save(3, state)
        assert checkpointer.save(4, state, force=True)
        assert checkpointer.all_steps() == [3, 4]
        assert not checkpointer.should_save(3)  # already saved
        assert not checkpointer.save(4, state, force=True)  # not written twice


def test_keeps_the_last_n_steps(tmp_path):
    state = make_state()
    with Checkpointer(tmp_path, sync_config(keep=2)) as checkpointer:
        for step in range(1, 6):
            checkpointer.save(step, state)
        assert checkpointer.all_steps() == [4, 5]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.isdigit()) == ["4", "5"]


@pytest.mark.parametrize(("mode", "best_two"), [("max", [2, 4]), ("min", [1, 3])])
def test_keeps_the_best_steps_by_metric_besides_the_latest(tmp_path, mode, best_two):
    scores = {1: 0.10, 2: 0.90, 3: 0.05, 4: 0.80, 5: 0.50, 6: 0.30}
    state = make_state()
    config = sync_config(keep=1, keep_best=2, best_metric="accuracy", best_mode=mode)
    with Checkpointer(tmp_path, config) as checkpointer:
        for step, score in scores.items():
            checkpointer.save(step, state, metrics={"accuracy": score, "loss": 1.0})
        checkpointer.save(7, state)  # a periodic save without eval metrics: kept as the latest
        assert checkpointer.all_steps() == sorted([*best_two, 7])
        assert checkpointer.best_step() == (2 if mode == "max" else 3)


def test_metrics_without_the_best_metric_are_rejected(tmp_path):
    config = sync_config(keep=1, keep_best=1, best_metric="accuracy")
    with Checkpointer(tmp_path, config) as checkpointer:
        with pytest.raises(CheckpointError, match=r"step 5 lack best_metric 'accuracy'.*'loss'"):
            checkpointer.save(5, make_state(), metrics={"loss": 0.3})
        assert checkpointer.all_steps() == []


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"keep_best": 2}, "needs best_metric"),
    ({"best_mode": "lowest"}, "'max' or 'min'"),
    ({"keep": 0}, "keep=0 must be >= 1"),
    ({"save_interval_steps": 0}, "save_interval_steps=0"),
])
def test_bad_configuration_is_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CheckpointConfig(**kwargs)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("change", "expected"), [
    ({"num_encoder_layers": 3},
     "missing params/encoder/layers/layers/2/attention/key (16, 2, 8)"),
    ({"mlp_dim": 48},
     "params/decoder/layers/layers/0/mlp/wi_0/kernel: stored shape (16, 32), expected (16, 48)"),
])
def test_incompatible_checkpoint_names_step_path_and_first_mismatches(tmp_path, change, expected):
    with Checkpointer(tmp_path, sync_config()) as checkpointer:
        checkpointer.save(20, make_state())
    other = T5Config(**{**TINY_T5.__dict__, **change})
    with Checkpointer(tmp_path, sync_config()) as checkpointer:
        with pytest.raises(CheckpointError) as info:
            checkpointer.restore(None, abstract_of(make_state(other)))
    message = str(info.value)
    assert f"checkpoint step 20 at {tmp_path / '20'} does not match" in message
    assert expected in message
    assert "INITIAL_CHECKPOINT_PATH" in message and "MODEL_DIR" in message


def test_other_optimizer_state_is_incompatible(tmp_path):
    with Checkpointer(tmp_path, sync_config()) as checkpointer:
        checkpointer.save(1, make_state(optimizer="adamw"))
        with pytest.raises(CheckpointError, match=r"unexpected opt_state/0/mu/"):
            checkpointer.restore(1, abstract_of(make_state(optimizer="adafactor")))


def test_restoring_a_missing_step_or_from_an_empty_directory_fails_clearly(tmp_path):
    state = make_state()
    with Checkpointer(tmp_path, sync_config()) as checkpointer:
        with pytest.raises(CheckpointError, match="holds no complete checkpoint"):
            checkpointer.restore(None, abstract_of(state))
        checkpointer.save(2, state)
        with pytest.raises(CheckpointError, match=r"no checkpoint for step 5; saved steps: \[2\]"):
            checkpointer.restore(5, abstract_of(state))


def test_damaged_checkpoint_names_step_and_path_and_can_fall_back(tmp_path, caplog):
    state, newer = make_state(seed=1), make_state(seed=2)
    with Checkpointer(tmp_path, sync_config()) as checkpointer:
        checkpointer.save(1, state, data_state='{"step": 1}')
        checkpointer.save(2, newer, data_state='{"step": 2}')
    data_files = [p for p in (tmp_path / "2" / "state").rglob("*")
                  if p.is_file() and p.parent.name == "d"]
    assert data_files, "expected OCDBT data files under state/**/d/"
    for path in data_files:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with Checkpointer(tmp_path, sync_config()) as checkpointer:
        with pytest.raises(UnreadableCheckpointError) as info:
            checkpointer.restore(None, abstract_of(state))
        restored, data_state = checkpointer.restore(None, abstract_of(state), fall_back=True)
    # One line: the step, the damaged file, what to do, where the full error is.
    message = str(info.value)
    assert re.fullmatch(
        rf"checkpoint step 2 at {re.escape(str(tmp_path / '2'))} cannot be read \(array \S+, "
        rf"file {re.escape(str(tmp_path / '2' / 'state'))}/(\S+/)?d/[0-9a-f]+, "
        r"ValueError: [^;]*\); the files are damaged or incomplete: resume from step 1 with "
        r"flantune\.CheckpointConfig\.fall_back_to_previous = True \(step 2 is then moved "
        r"aside to 2\.damaged-<time> and saved again\) or delete \S+/2\. Full error: "
        rf"{re.escape(str(tmp_path / DETAIL_LOG))}", message), message
    # Short but for the paths it names (pytest's tmp_path is longer under xdist).
    assert len(message.replace(str(tmp_path), "")) < 500 and "tensorstore_spec" not in message
    assert "tensorstore_spec" in (tmp_path / DETAIL_LOG).read_text()  # the detail, kept
    assert data_state == '{"step": 1}'
    assert_trees_equal(restored, state)
    assert "step 2" in caplog.text and "Falling back" in caplog.text


def test_fall_back_moves_the_damaged_step_aside_so_it_is_saved_again(tmp_path, caplog):
    state, damaged, recomputed = make_state(seed=1), make_state(seed=2), make_state(seed=3)
    with Checkpointer(tmp_path, sync_config()) as checkpointer:
        checkpointer.save(1, state, data_state='{"step": 1}')
        checkpointer.save(2, damaged, data_state='{"step": 2}')
    largest = max((p for p in (tmp_path / "2" / "state").rglob("*") if p.is_file()),
                  key=lambda p: p.stat().st_size)
    largest.write_bytes(largest.read_bytes()[:100])
    files = {p.relative_to(tmp_path / "2"): p.read_bytes()
             for p in (tmp_path / "2").rglob("*") if p.is_file()}
    with Checkpointer(tmp_path, sync_config()) as checkpointer:
        restored, data_state = checkpointer.restore(2, abstract_of(state), fall_back=True)
        assert data_state == '{"step": 1}'
        assert_trees_equal(restored, state)
        assert checkpointer.all_steps() == [1] and checkpointer.latest_step() == 1
        assert checkpointer.should_save(2)
        assert checkpointer.save(2, recomputed, data_state='{"step": "2 again"}')
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("2.damaged-")]
    assert len(moved) == 1 and re.fullmatch(r"2\.damaged-\d{8}T\d{6}", moved[0].name)
    assert {p.relative_to(moved[0]): p.read_bytes()
            for p in moved[0].rglob("*") if p.is_file()} == files  # kept as it was
    assert f"Moved the damaged checkpoint step 2 from {tmp_path / '2'} to {moved[0]}" \
        in caplog.text
    # A second resume, and `flantune eval` (load_initial_params), find the recomputed step.
    caplog.clear()
    with Checkpointer(tmp_path, sync_config()) as checkpointer:
        assert checkpointer.all_steps() == [1, 2]
        restored, data_state = checkpointer.restore(None, abstract_of(state))
    assert data_state == '{"step": "2 again"}'
    assert_trees_equal(restored, recomputed)
    assert_trees_equal(load_initial_params(tmp_path, abstract_of(state["params"])),
                       recomputed["params"])
    assert "Falling back" not in caplog.text and moved[0].exists()


@pytest.mark.slow
def test_a_resumed_run_falling_back_saves_the_damaged_step_again(tmp_path, caplog):
    """End to end: a run saved steps 1 and 2; step 2 is damaged; the resumed run falls back to
    step 1, recomputes step 2 bit for bit and saves it; the next run resumes cleanly."""
    import tests.task_fixtures  # noqa: F401 (registers test_mix)
    from flantune.train.loop import TrainConfig, train

    def run(steps: int, **checkpoint):
        return train(TrainConfig(
            model_dir=str(tmp_path), mixture_or_task_name="test_mix",
            task_feature_lengths={"inputs": 48, "targets": 16}, train_steps=steps,
            batch_size=4, model=T5Config(vocab_size=8000, emb_dim=16, num_heads=2, head_dim=8,
                                         mlp_dim=32, num_encoder_layers=1,
                                         num_decoder_layers=1),
            window=64, log_every_steps=1, progress=False,
            checkpoint=CheckpointConfig(save_interval_steps=1, async_save=False,
                                        **checkpoint)))

    first = run(2)
    largest = max((p for p in (tmp_path / "2" / "state").rglob("*") if p.is_file()),
                  key=lambda p: p.stat().st_size)
    largest.write_bytes(largest.read_bytes()[:100])
    second = run(3, fall_back_to_previous=True)
    assert sorted(second.losses) == [2, 3] and second.losses[2] == first.losses[2]
    moved = [p.name for p in tmp_path.iterdir() if p.name.startswith("2.damaged-")]
    assert len(moved) == 1 and "Moved the damaged checkpoint step 2" in caplog.text
    caplog.clear()
    third = run(4)  # no fall-back needed: step 3 (and the recomputed 2) are intact
    assert sorted(third.losses) == [4] and "cannot be read" not in caplog.text
    with Checkpointer(tmp_path, sync_config()) as checkpointer:
        assert checkpointer.all_steps() == [2, 3, 4]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("2.damaged-")] == moved


def test_fall_back_with_every_step_damaged_moves_nothing(tmp_path):
    state = make_state()
    with Checkpointer(tmp_path, sync_config()) as checkpointer:
        checkpointer.save(1, state)
        checkpointer.save(2, state)
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.parent.name == "d":
            path.write_bytes(b"")
    with Checkpointer(tmp_path, sync_config()) as checkpointer:
        with pytest.raises(UnreadableCheckpointError, match=r"step 1 .*delete \S+/1 to start"):
            checkpointer.restore(None, abstract_of(state), fall_back=True)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["1", "2"]


def _flip_state() -> dict:
    """A small train state with arrays of several dtypes (orbax writes them into a few
    zstd-compressed OCDBT files)."""
    rng = np.random.default_rng(0)
    return {"params": {"w": jnp.asarray(rng.normal(size=(64, 64)), jnp.float32),
                       "b": jnp.asarray(rng.normal(size=(256,)), jnp.bfloat16),
                       "emb": jnp.asarray(rng.normal(size=(128, 32)), jnp.float32),
                       "ids": jnp.asarray(rng.integers(-99, 99, size=(40,)), jnp.int32)},
            "step": jnp.asarray(7, jnp.int32), "rng": jax.random.PRNGKey(1)}


def test_every_single_bit_flip_in_array_files_is_detected(tmp_path):
    """Flips one random bit of the array files (state/**/d/*) of a saved step, restores, and
    classifies: detected (UnreadableCheckpointError), harmless (bit-identical values; only
    in the per-process OCDBT trees under state/ocdbt.process_*/, which orbax merges into the
    top-level tree at save and a restore never reads) or silent (changed values): none."""
    trials, rng = 300, np.random.default_rng(17)
    state = _flip_state()
    expected = to_numpy(state)
    template = tmp_path / "template"
    with Checkpointer(template, sync_config()) as checkpointer:
        checkpointer.save(1, state)
    files = sorted(p.relative_to(template) for p in (template / "1" / "state").rglob("*")
                   if p.is_file() and p.parent.name == "d")
    sizes = [(template / f).stat().st_size for f in files]
    outcomes: dict[str, int] = {"checksum": 0, "read error": 0, "harmless": 0}
    silent = []
    for trial in range(trials):
        directory = tmp_path / f"trial{trial}"
        shutil.copytree(template, directory)
        # A uniformly random bit of all array files' bytes.
        position = int(rng.integers(sum(sizes)))
        index = int(np.searchsorted(np.cumsum(sizes), position, side="right"))
        target = directory / files[index]
        data = bytearray(target.read_bytes())
        offset, bit = position - sum(sizes[:index]), int(rng.integers(8))
        data[offset] ^= 1 << bit
        target.write_bytes(bytes(data))
        try:
            with Checkpointer(directory, sync_config()) as checkpointer:
                restored, _ = checkpointer.restore(1, abstract_of(state))
        except UnreadableCheckpointError as err:
            outcomes["checksum" if "ChecksumMismatch" in str(err) else "read error"] += 1
            continue
        finally:
            shutil.rmtree(directory)
        if all(np.asarray(a).tobytes() == np.asarray(b).tobytes()
               for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(expected),
                               strict=True)):
            assert "ocdbt.process_" in str(target), (target, offset, bit)
            outcomes["harmless"] += 1
        else:
            silent.append((str(target.relative_to(directory)), offset, bit))
    print(f"{trials} single-bit flips: {outcomes}, silent: {len(silent)}")
    assert silent == [], silent
    assert outcomes["checksum"] >= 20  # the checksum, not only TensorStore, is exercised


def test_damaged_only_step_cannot_fall_back(tmp_path):
    state = make_state()
    with Checkpointer(tmp_path, sync_config()) as checkpointer:
        checkpointer.save(3, state)
    for path in (tmp_path / "3" / "state").rglob("*"):
        if path.is_file() and path.parent.name == "d":
            path.write_bytes(b"")
    with Checkpointer(tmp_path, sync_config()) as checkpointer:
        with pytest.raises(UnreadableCheckpointError, match=rf"delete {tmp_path / '3'} to start"):
            checkpointer.restore(3, abstract_of(state), fall_back=True)


def _unwritable_directory(tmp_path: Path) -> Path:
    """A MODEL_DIR that cannot be created: under a read-only directory, or, when running as root
    (which ignores permission bits), under a regular file."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    probe = locked / "probe"
    try:
        probe.write_bytes(b"")
    except OSError:
        return locked / "model_dir"
    probe.unlink()
    regular_file = tmp_path / "file.txt"
    regular_file.write_text("not a directory")
    return regular_file / "sub"


def test_unwritable_model_dir_fails_before_anything_else(tmp_path):
    model_dir = _unwritable_directory(tmp_path)
    try:
        with pytest.raises(CheckpointError, match=rf"MODEL_DIR {model_dir} is not writable"):
            Checkpointer(model_dir, CheckpointConfig())
    finally:
        (tmp_path / "locked").chmod(0o700)


def test_data_states_of_another_process_count_are_rejected(tmp_path):
    state = make_state()
    with Checkpointer(tmp_path, sync_config()) as checkpointer:
        checkpointer.save(4, state, data_state={0: '{"p": 0}', 1: '{"p": 1}'})
        with pytest.raises(CheckpointError,
                           match=r"positions of 2 process\(es\).*this run has 1"):
            checkpointer.restore(4, abstract_of(state))


# --------------------------------------------------------------------------- initial params


def test_initial_params_from_a_model_dir_and_a_step_dir(tmp_path):
    old = make_state(seed=1)
    with Checkpointer(tmp_path, sync_config()) as checkpointer:
        checkpointer.save(5, make_state(seed=2))
        checkpointer.save(9, old)
    abstract = abstract_of(old["params"])
    assert_trees_equal(load_initial_params(tmp_path, abstract), old["params"])
    older = load_initial_params(tmp_path / "5", abstract)
    assert_trees_equal(older, make_state(seed=2)["params"])


def test_initial_params_are_verified_against_the_saved_checksums(tmp_path):
    """`flantune eval` reads params only; they are checked too, and a damaged step is one line
    pointing at the step before."""
    state = make_state()
    with Checkpointer(tmp_path, sync_config()) as checkpointer:
        checkpointer.save(1, state)
        checkpointer.save(2, state)
    item = tmp_path / "2" / "fingerprint" / "metadata"
    stored = json.loads(item.read_text())
    key = next(k for k in stored["arrays"] if k.startswith("params/"))
    stored["arrays"][key]["checksum"] = "0" * 16
    item.write_text(json.dumps(stored))
    abstract = abstract_of(state["params"])
    with pytest.raises(UnreadableCheckpointError) as info:
        load_initial_params(tmp_path, abstract, role="CHECKPOINT_PATH")
    assert re.fullmatch(
        rf"CHECKPOINT_PATH {re.escape(str(tmp_path / '2' / 'state'))} cannot be read \(array "
        rf"{re.escape(key)}, ChecksumMismatch\); its files are damaged or incomplete: pass an "
        rf"earlier step directory instead \({re.escape(str(tmp_path / '1'))}\), or resume "
        r"training with flantune\.CheckpointConfig\.fall_back_to_previous = True, which moves "
        rf"step 2 aside and saves it again\. Full error: {re.escape(str(tmp_path / DETAIL_LOG))}",
        str(info.value)), str(info.value)
    assert_trees_equal(load_initial_params(tmp_path / "1", abstract), state["params"])


def test_initial_params_from_a_flantune_checkpoint_of_another_model_fail(tmp_path):
    with Checkpointer(tmp_path, sync_config()) as checkpointer:
        checkpointer.save(1, make_state())
    other = T5Config(**{**TINY_T5.__dict__, "emb_dim": 24})
    with pytest.raises(CheckpointError, match=r"params do not match this run's model"):
        load_initial_params(tmp_path, abstract_of(make_state(other)["params"]))


@pytest.mark.parametrize("config", [TINY_T5, TINY_DECODER], ids=["t5", "decoder"])
def test_initial_params_from_a_hugging_face_checkpoint(tmp_path, config):
    params = random_params(config, seed=3)
    save_hf_checkpoint(config, params, tmp_path / "hf")
    loaded = load_initial_params(tmp_path / "hf", abstract_of(params))
    assert_trees_equal(loaded, params)
    as_bf16 = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, jnp.bfloat16), params)
    loaded_bf16 = load_initial_params(tmp_path / "hf", as_bf16)
    assert_trees_equal(loaded_bf16, jax.tree.map(lambda p: p.astype(jnp.bfloat16), params))


def test_initial_params_from_a_hugging_face_checkpoint_into_scanned_layers(tmp_path):
    params = random_params(TINY_T5, seed=4)
    save_hf_checkpoint(TINY_T5, params, tmp_path)
    scanned = T5Config(**{**TINY_T5.__dict__, "scan_layers": True})
    loaded = load_initial_params(tmp_path, abstract_of(random_params(scanned)))
    layers = params["encoder"]["layers"]["layers"]
    np.testing.assert_array_equal(
        loaded["encoder"]["layers"]["layers"]["mlp"]["wo"]["kernel"],
        np.stack([layers[i]["mlp"]["wo"]["kernel"] for i in range(2)]))
    assert_trees_equal(loaded, load_hf_checkpoint(tmp_path, scan_layers=True)[1])


def test_initial_params_from_a_hugging_face_checkpoint_of_another_model_fail(tmp_path):
    other = T5Config(**{**TINY_T5.__dict__, "num_decoder_layers": 1})
    save_hf_checkpoint(other, random_params(other), tmp_path)
    with pytest.raises(CheckpointError,
                       match=r"converted model \(T5Config\(.*num_decoder_layers=1.*does not match"
                             r".*missing decoder/layers/layers/1/cross_attention/key"):
        load_initial_params(tmp_path, abstract_of(random_params(TINY_T5)))


def test_initial_params_from_a_parameter_checkpoint(tmp_path):
    """What `flantune convert hf-to-flantune` writes is a checkpoint train and eval take."""
    params = random_params(TINY_DECODER, seed=5)
    save_params(TINY_DECODER, params, tmp_path / "ours")
    assert_trees_equal(load_initial_params(tmp_path / "ours", abstract_of(params)), params)
    as_bf16 = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, jnp.bfloat16), params)
    assert_trees_equal(load_initial_params(tmp_path / "ours", as_bf16),
                       jax.tree.map(lambda p: p.astype(jnp.bfloat16), params))


def test_initial_params_from_a_parameter_checkpoint_of_another_model_fail(tmp_path):
    save_params(TINY_DECODER, random_params(TINY_DECODER), tmp_path)
    scanned = DecoderConfig(**{**TINY_DECODER.__dict__, "scan_layers": True})
    with pytest.raises(CheckpointError, match=r"CHECKPOINT_PATH .*params do not match this "
                                              r"run's model .*--scan-layers"):
        load_initial_params(tmp_path, abstract_of(random_params(scanned)),
                            role="CHECKPOINT_PATH")


def test_initial_params_from_no_kind_of_checkpoint_fail(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    abstract = abstract_of(random_params(TINY_T5))
    with pytest.raises(CheckpointError, match=r"INITIAL_CHECKPOINT_PATH .* is not a checkpoint "
                                              r"\(it holds notes.txt\); it must be a training "
                                              r"run's MODEL_DIR .*Hugging Face"):
        load_initial_params(tmp_path, abstract)
    with pytest.raises(CheckpointError, match="CHECKPOINT_PATH .*missing does not exist"):
        load_initial_params(tmp_path / "missing", abstract, role="CHECKPOINT_PATH")


# --------------------------------------------------------------------------- several devices


def _run_script(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    return subprocess.Popen([sys.executable, __file__, *args], env=full_env, cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen, timeout: int = 300) -> str:
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
    assert process.returncode == 0, f"subprocess failed:\n{stdout}\n{stderr[-4000:]}"
    return stdout


@pytest.mark.slow
def test_restore_onto_a_different_mesh(tmp_path):
    """Saved with 8-way fsdp over 8 devices; restored onto a 4x2 mesh (in that process) and onto
    this process's single device. Both restores verify the checksums computed on 8 devices."""
    stdout = _finish(_run_script("reshard", str(tmp_path),
                                 env={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}))
    assert "restored onto 4x2" in stdout
    stored = json.loads((tmp_path / "1" / "fingerprint" / "metadata").read_text())
    assert stored["format"] == 2 and len(stored["arrays"]) == len(jax.tree.leaves(make_state()))
    with Checkpointer(tmp_path, sync_config()) as checkpointer:
        restored, data_state = checkpointer.restore(None, abstract_of(make_state()))
    assert data_state == '{"resharded": true}'
    assert_trees_equal(restored, make_state())
    assert all(leaf.sharding == SingleDeviceSharding(jax.devices()[0])
               for leaf in jax.tree.leaves(restored))


@pytest.mark.slow
def test_two_processes_each_restore_their_own_data_state(tmp_path):
    port = str(free_port())
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    processes = [_run_script("two_processes", str(tmp_path), port, str(i), env=env)
                 for i in range(2)]
    outputs = [_finish(p) for p in processes]
    for index, output in enumerate(outputs):
        assert f"process {index} restored its data state" in output
    stored = json.loads((tmp_path / "6" / "data_state" / "metadata").read_text())
    assert stored == {"0": '{"process": 0}', "1": '{"process": 1}'}


def test_a_write_killed_midway_leaves_the_last_complete_step(tmp_path):
    process = _run_script("killed_mid_write", str(tmp_path))
    try:
        line = process.stdout.readline()
        assert line.strip() == "writing step 2", line + process.stderr.read()[-4000:]
    finally:
        process.kill()  # SIGKILL: no cleanup runs in the writer
        process.communicate()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("2.")]
    state = make_state()
    with Checkpointer(tmp_path, sync_config()) as checkpointer:
        assert checkpointer.all_steps() == [1]
        restored, data_state = checkpointer.restore(None, abstract_of(state))
        assert data_state == '{"step": 1}'
        assert_trees_equal(restored, state)
        assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("2.")]
        assert checkpointer.save(2, state)
        assert checkpointer.all_steps() == [1, 2]


# --------------------------------------------------------------------------- subprocess bodies


def _killed_mid_write_main(directory: str) -> None:
    """Saves step 1, then starts saving step 2 with a write that never finishes, and waits to
    be killed."""
    state = make_state()
    with Checkpointer(directory, CheckpointConfig(save_interval_steps=1)) as checkpointer:
        checkpointer.save(1, state, data_state='{"step": 1}')
        checkpointer.wait_until_finished()
        never = threading.Event()

        async def stalled_write(self, item, path):
            await asyncio.to_thread(never.wait)

        ocp.JsonCheckpointHandler._save_fn = stalled_write
        checkpointer.save(2, state, data_state='{"step": 2}')
        if not _wait_for_temporary_directory(Path(directory), 2):
            raise AssertionError(f"no temporary directory for step 2 in {directory}")
        print("writing step 2", flush=True)
        never.wait(600)


def _fsdp_sharding(mesh: jax.sharding.Mesh, axis: str):
    """Shards a leaf's first dimension over `axis` when it divides evenly, else replicates."""
    size = mesh.shape[axis]

    def sharding(leaf) -> NamedSharding:
        if leaf.ndim and leaf.shape[0] % size == 0:
            return NamedSharding(mesh, PartitionSpec(axis))
        return NamedSharding(mesh, PartitionSpec())

    return sharding


def _reshard_main(directory: str) -> None:
    assert jax.device_count() == 8, jax.devices()
    state = make_state()
    fsdp8 = jax.make_mesh((8,), ("fsdp",))
    sharded = jax.tree.map(lambda leaf, s: jax.device_put(leaf, s), state,
                           jax.tree.map(_fsdp_sharding(fsdp8, "fsdp"), state))
    assert any(len(leaf.sharding.device_set) == 8 and not leaf.sharding.is_fully_replicated
               for leaf in jax.tree.leaves(sharded))
    with Checkpointer(directory, CheckpointConfig(save_interval_steps=1)) as checkpointer:
        checkpointer.save(1, sharded, data_state='{"resharded": true}')
        checkpointer.wait_until_finished()
        mesh = jax.make_mesh((4, 2), ("data", "fsdp"))

        def four_by_two(leaf) -> NamedSharding:
            if leaf.ndim >= 2 and leaf.shape[0] % 4 == 0 and leaf.shape[1] % 2 == 0:
                return NamedSharding(mesh, PartitionSpec("data", "fsdp"))
            return _fsdp_sharding(mesh, "fsdp")(leaf)

        abstract = abstract_of(state, four_by_two)
        restored, data_state = checkpointer.restore(1, abstract)
    assert data_state == '{"resharded": true}'
    assert_trees_equal(restored, state)
    for leaf, target in zip(jax.tree.leaves(restored), jax.tree.leaves(abstract), strict=True):
        assert leaf.sharding == target.sharding, (leaf.sharding, target.sharding)
    assert any(leaf.sharding.spec == PartitionSpec("data", "fsdp")
               for leaf in jax.tree.leaves(restored))
    print("restored onto 4x2")


def _two_processes_main(directory: str, port: str, process_id: str) -> None:
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=int(process_id))
    index = jax.process_index()
    mesh = jax.make_mesh((4,), ("fsdp",))
    state = make_state()
    shardings = jax.tree.map(_fsdp_sharding(mesh, "fsdp"), state)
    host = to_numpy(state)
    sharded = jax.tree.map(
        lambda value, s: jax.make_array_from_callback(value.shape, s, lambda i: value[i]),
        host, shardings)
    own = json.dumps({"process": index})
    with Checkpointer(directory, CheckpointConfig(save_interval_steps=6)) as checkpointer:
        checkpointer.save(6, sharded, data_state=own)
        checkpointer.wait_until_finished()
        abstract = jax.tree.map(
            lambda v, s: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=s), host, shardings)
        restored, data_state = checkpointer.restore(None, abstract)
    assert data_state == own, (data_state, own)
    for leaf, value in zip(jax.tree.leaves(restored), jax.tree.leaves(host), strict=True):
        for shard in leaf.addressable_shards:
            np.testing.assert_array_equal(np.asarray(shard.data), value[shard.index])
    print(f"process {index} restored its data state")


def _main(argv: list[str]) -> None:
    mode, *args = argv
    modes = {"reshard": _reshard_main, "two_processes": _two_processes_main,
             "killed_mid_write": _killed_mid_write_main}
    modes[mode](*args)


if __name__ == "__main__":
    _main(sys.argv[1:])
