"""Checkpoints of the train state with orbax-checkpoint.

A step directory holds three items: `state` (the train state pytree: params, optimizer state,
step, RNG; saved with `ocp.args.StandardSave`, so sharded arrays are written by the processes
that own them), `data_state` (the data iterator's position of every process, as one JSON mapping
`{process_index: state_json}`) and `fingerprint` (an exact checksum of every array's bits,
checked on restore: `flantune.train.fingerprints`). Orbax
writes JSON items from the primary process only, so each process's position is gathered to every
process before the save; on restore each process picks its own entry. Orbax writes each step
into a temporary directory and renames it when complete, so an interrupted write never shows up
as a step; restore checks the stored tree against the expected one before reading any array.

A damaged step is reported in one line (the detail goes to MODEL_DIR/checkpoint_errors.log);
resuming with `fall_back_to_previous` moves it aside to `N.damaged-<time>` (kept, outside
orbax's step names) so that step N is saved again. A full disk raises one CheckpointError
naming MODEL_DIR, the free and the needed space.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx
from jax.experimental import multihost_utils

from flantune.models import build_model, load_hf_checkpoint, model_params
from flantune.models.config import ModelConfig
from flantune.models.convert import CheckpointError as HFCheckpointError
from flantune.models.convert import config_from_hf_dict
from flantune.train import architecture_check, checkpoint_kinds
from flantune.train.adapter_reference import AdapterReferenceError, read_reference
from flantune.train.checkpoint_errors import (
    DiskFullLogFilter,
    is_disk_full,
    is_os_error,
    quiet_closed_loop_callbacks,
    size_text,
    summary,
    write_detail,
)
from flantune.train.checkpoint_kinds import absolute_path
from flantune.train.fingerprints import (
    FingerprintFormatError,
    FingerprintSave,
    PendingFingerprint,
    fingerprint_mismatches,
    flat_items,
    path_key,
    start_fingerprint,
)
from flantune.train.snapshots import snapshot

PyTree = Any

STATE_ITEM = checkpoint_kinds.STATE_ITEM
DATA_STATE_ITEM = "data_state"
# Per-array checksums of the saved state, checked after every restore
# (flantune.train.fingerprints).
FINGERPRINT_ITEM = "fingerprint"
# A damaged step moved aside by a fall-back restore: `N.damaged-<time>` (no '_': orbax reads
# names ending in '_<digits>' as steps).
DAMAGED_MARK = ".damaged-"
_MAX_LISTED_PROBLEMS = 8
# Where orbax's own reports of a failed write go: absl logging, and asyncio's "Task exception
# was never retrieved" for its metadata writes.
_ORBAX_LOGGERS = ("absl", "asyncio")
_log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or read; the message names the path/step and what to do."""


class UnreadableCheckpointError(CheckpointError):
    """A saved step's files are damaged or incomplete (an earlier step may still be good)."""


class ChecksumMismatch(ValueError):
    """Restored arrays whose bits differ from the checksum saved with them."""


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """When to save and which checkpoints to keep.

    `keep`: the last N steps kept (None keeps all). `keep_best`: additionally keep the N steps with
    the best `best_metric` (one of the metrics passed to `Checkpointer.save`), by `best_mode`
    ('max' or 'min'). `async_save`: write in the background. `save_in_thread` (with
    `async_save`, in a single-process run): call orbax's save from a writer thread with a
    snapshot of the state, so the caller blocks only while the snapshot is dispatched; otherwise
    (and always with several processes) the caller also waits for orbax's per-array work and its
    copy to host memory.
    """

    save_interval_steps: int = 1000
    keep: int | None = 3
    keep_best: int | None = None
    best_metric: str | None = None
    best_mode: str = "max"
    async_save: bool = True
    save_in_thread: bool = True
    # Resuming: if the latest step's files are damaged, use the newest readable earlier step.
    fall_back_to_previous: bool = False

    def __post_init__(self) -> None:
        if self.save_interval_steps < 1:
            raise ValueError(f"CheckpointConfig.save_interval_steps={self.save_interval_steps} "
                             "must be >= 1.")
        for name in ("keep", "keep_best"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"CheckpointConfig.{name}={value} must be >= 1 or None "
                                 "(None: keep all / no best-checkpoint tracking).")
        if self.best_mode not in ("max", "min"):
            raise ValueError(f"CheckpointConfig.best_mode={self.best_mode!r} must be 'max' or "
                             "'min'.")
        if self.keep_best is not None and not self.best_metric:
            raise ValueError(f"CheckpointConfig.keep_best={self.keep_best} needs best_metric: "
                             "the name of the eval metric that ranks checkpoints.")


def _check_writable(directory: epath.Path) -> None:
    """Creates `directory` and writes and removes a probe file in it (every process does this,
    since every process writes its own array shards)."""
    probe = directory / f".flantune_write_probe_{jax.process_index()}_{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        reason = err.strerror or str(err)
        raise CheckpointError(
            f"MODEL_DIR {directory} is not writable by process {jax.process_index()} ({reason}); "
            "point MODEL_DIR at a directory this user can create and write to.") from err


def free_bytes(directory: str | os.PathLike) -> int:
    """Free bytes on the file system holding `directory` (local paths; remote storage such as
    gs:// reports no limit)."""
    path = str(directory)
    if "://" in path:
        return 2**62
    return shutil.disk_usage(path).free


def checkpoint_copies(config: CheckpointConfig) -> int:
    """How many checkpoints are on disk at once at most: the `keep` latest and the `keep_best`
    best (orbax deletes old steps only once a new one is complete) and one being written.
    With `keep=None` (keep all) the count grows with every save; the latest one is counted."""
    return (config.keep or 1) + (config.keep_best or 0) + 1


def _kept_steps(directory: str | os.PathLike) -> int:
    """Complete steps already in `directory` (0 for a new or remote one)."""
    path = os.fspath(directory)
    if "://" in path or not os.path.isdir(path):
        return 0
    return len(ocp.step.checkpoint_steps(path))


def check_free_space(directory: str | os.PathLike, state_bytes: int, copies: int | None = None,
                     *, config: CheckpointConfig | None = None) -> None:
    """Raises CheckpointError unless `directory` has room for the checkpoints a run keeps at
    once: `copies` of `state_bytes`, by default `checkpoint_copies(config)` (`config`: the
    run's CheckpointConfig, else the default one), less the complete steps already there."""
    config = config or CheckpointConfig()
    if copies is None:
        copies = checkpoint_copies(config)
    present = min(_kept_steps(directory), copies - 1)
    need = state_bytes * (copies - present)
    free = free_bytes(directory)
    if config.keep is None:
        _log.warning("CheckpointConfig.keep=None keeps every checkpoint: MODEL_DIR %s needs "
                     "about %s more for each save.", directory, size_text(state_bytes))
    if free < need:
        kept = f"keep={config.keep}" + (f" + keep_best={config.keep_best}"
                                        if config.keep_best else "")
        on_disk = f"; {present} already on disk" if present else ""
        raise CheckpointError(
            f"MODEL_DIR {directory} has {size_text(free)} free, but checkpoints of this run "
            f"need about {size_text(need)} more: up to {copies} at once ({kept} + 1 being "
            f"written) of {size_text(state_bytes)} of parameters and optimizer state each"
            f"{on_disk}. Free some space, lower CheckpointConfig.keep, or point MODEL_DIR at a "
            "larger disk before training.")


def _preservation_policy(config: CheckpointConfig) -> ocp.checkpoint_managers.PreservationPolicy:
    policies: list[ocp.checkpoint_managers.PreservationPolicy] = [
        ocp.checkpoint_managers.LatestN(n=config.keep)]
    if config.keep_best is not None:
        metric = config.best_metric
        policies.append(ocp.checkpoint_managers.BestN(
            get_metric_fn=lambda metrics: metrics[metric],
            reverse=config.best_mode == "min",
            n=config.keep_best,
            keep_checkpoints_without_metrics=False,
        ))
    return ocp.checkpoint_managers.AnyPreservationPolicy(policies)


def _tree_bytes(tree: PyTree) -> int:
    """Bytes of every array of `tree` (global sizes)."""
    return int(sum(int(np.prod(leaf.shape, dtype=np.int64)) * leaf.dtype.itemsize
                   for leaf in jax.tree.leaves(tree)))


def _allgather_strings(text: str) -> list[str]:
    """Every process's `text`, in process order (a collective: all processes must call it)."""
    data = np.frombuffer(text.encode("utf-8"), np.uint8)
    lengths = np.asarray(multihost_utils.process_allgather(np.array([data.size], np.int32)))
    padded = np.zeros(int(lengths.max()), np.uint8)
    padded[:data.size] = data
    rows = np.asarray(multihost_utils.process_allgather(padded))
    return [bytes(row[:n]).decode("utf-8") for row, n in zip(rows, lengths.ravel(), strict=True)]


def _all_data_states(data_state: str | Mapping[int, str]) -> dict[str, str]:
    if isinstance(data_state, Mapping):
        states = {str(int(k)): v for k, v in data_state.items()}
    elif isinstance(data_state, str):
        states = {str(i): s for i, s in enumerate(_allgather_strings(data_state))}
    else:
        raise TypeError("data_state must be this process's iterator state as a JSON string or a "
                        f"mapping process_index -> JSON string, not {type(data_state).__name__}")
    for index, text in states.items():
        if not isinstance(text, str):
            raise TypeError(f"data_state for process {index} must be a JSON string, "
                            f"not {type(text).__name__}")
    return states


def _key_text(key: Any) -> str:
    for attr in ("key", "idx", "name"):  # DictKey, SequenceKey, GetAttrKey (namedtuple fields)
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _flat_shapes(tree: PyTree) -> dict[str, tuple[int, ...]]:
    """'a/b/0' -> shape for every leaf. Paths name dict keys, sequence indices and namedtuple
    fields alike, so orbax's stored layout (tuples as lists, namedtuples as dicts) and the
    in-memory tree compare. (``ocp.tree.serialize_tree`` fails on optax states that hold an
    empty state before a non-empty one, e.g. adamw with a schedule.)"""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {"/".join(_key_text(k) for k in path): tuple(getattr(leaf, "shape", ()) or ())
            for path, leaf in flat}


def _tree_differences(stored: PyTree, expected: PyTree) -> list[str]:
    """Missing, unexpected and misshapen leaves; parameters first, then in key order."""
    have, want = _flat_shapes(stored), _flat_shapes(expected)
    problems = []
    for key in sorted(have.keys() | want.keys(), key=lambda k: (not k.startswith("params/"), k)):
        if key not in have:
            problems.append(f"missing {key} {want[key]}")
        elif key not in want:
            problems.append(f"unexpected {key} {have[key]}")
        elif have[key] != want[key]:
            problems.append(f"{key}: stored shape {have[key]}, expected {want[key]}")
    return problems


def _summarize(problems: list[str]) -> str:
    listed = "; ".join(problems[:_MAX_LISTED_PROBLEMS])
    more = len(problems) - _MAX_LISTED_PROBLEMS
    return listed + (f"; ... and {more} more" if more > 0 else "")


def _with_shardings(abstract: PyTree) -> PyTree:
    """`abstract` with a sharding on every leaf: leaves without one go to the first device in a
    single-process run (orbax would return them as numpy arrays); with several processes the
    placement must be given."""
    def placed(path: tuple[Any, ...], leaf: Any) -> jax.ShapeDtypeStruct:
        sharding = getattr(leaf, "sharding", None)
        if sharding is None:
            if jax.process_count() > 1:
                raise CheckpointError(
                    f"no sharding for {jax.tree_util.keystr(path)}: with several processes "
                    "every leaf of the abstract state needs one (a NamedSharding on the mesh).")
            sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)

    return jax.tree_util.tree_map_with_path(placed, abstract)


def _restore_args(abstract: PyTree) -> PyTree:
    return ocp.checkpoint_utils.construct_restore_args(abstract)


def _handler_registry() -> ocp.handlers.DefaultCheckpointHandlerRegistry:
    """Names the handler of each item, so a fresh manager (after a restart) can read them."""
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    registry.add(STATE_ITEM, ocp.args.StandardSave)
    registry.add(STATE_ITEM, ocp.args.StandardRestore)
    registry.add(DATA_STATE_ITEM, ocp.args.JsonSave)
    registry.add(DATA_STATE_ITEM, ocp.args.JsonRestore)
    registry.add(FINGERPRINT_ITEM, FingerprintSave)
    registry.add(FINGERPRINT_ITEM, ocp.args.JsonRestore)
    return registry


class Checkpointer:
    """Saves and restores the train state (and the data iterator's position) in a MODEL_DIR."""

    def __init__(self, directory: str | os.PathLike, config: CheckpointConfig):
        self.directory = absolute_path(directory)
        self.config = config
        _check_writable(self.directory)
        metric = config.best_metric
        options = ocp.CheckpointManagerOptions(
            # Every interval, and at a preemption sync point (a scheduler's shutdown notice);
            # orbax's default would also save the first step of a fresh run.
            save_decision_policy=ocp.checkpoint_managers.AnySavePolicy([
                ocp.checkpoint_managers.FixedIntervalPolicy(config.save_interval_steps),
                ocp.checkpoint_managers.PreemptionCheckpointingPolicy(),
            ]),
            preservation_policy=_preservation_policy(config),
            best_fn=(lambda metrics: metrics[metric]) if metric else None,
            best_mode=config.best_mode,
            enable_async_checkpointing=config.async_save,
            # Leftovers of writes interrupted by a crash are removed; they never count as steps.
            cleanup_tmp_directories=True,
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, handler_registry=_handler_registry())
        self._name_format = ocp.step.standard_name_format()
        # Orbax's barriers in a multi-process save are device collectives, which every process
        # must issue in the same order as the train step's: there orbax is called on this thread.
        self._writer = (ThreadPoolExecutor(1, thread_name_prefix="flantune-checkpoint")
                        if config.async_save and config.save_in_thread
                        and jax.process_count() == 1 else None)
        self._pending: Future[bool] | None = None
        # (step, bytes) of the write last handed to orbax, whose background part may still run.
        self._saving: tuple[int, int] | None = None
        self._disk_full_logs = DiskFullLogFilter()
        for name in _ORBAX_LOGGERS:
            logging.getLogger(name).addFilter(self._disk_full_logs)
        quiet_closed_loop_callbacks()

    def check_free_space(self, state_bytes: int) -> None:
        """`check_free_space` for this MODEL_DIR and CheckpointConfig (`keep`, `keep_best`)."""
        check_free_space(self.directory, state_bytes, config=self.config)

    def latest_step(self) -> int | None:
        """The newest saved step (a background save counts from its start), or None."""
        self._settle()
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """Every saved step, ascending (a background save counts from its start)."""
        self._settle()
        return sorted(self._manager.all_steps())

    def best_step(self) -> int | None:
        """The step with the best `best_metric` (the latest step without one)."""
        self._settle()
        return self._manager.best_step()

    def step_path(self, step: int) -> epath.Path:
        """The directory of a saved step."""
        return ocp.step.build_step_path(self.directory, self._name_format, step)

    def should_save(self, step: int) -> bool:
        """True at every `save_interval_steps`-th step newer than the latest saved one, and when
        the cluster has announced a preemption."""
        self._settle()
        return self._manager.should_save(step)

    def save(self, step: int, state: PyTree, *, data_state: str | Mapping[int, str] | None = None,
             metrics: Mapping[str, float] | None = None, force: bool = False) -> bool:
        """Saves `state` (and the data iterator position) as `step` if `should_save(step)` or
        `force`; returns whether a save started (a step already saved is not written again).
        With `async_save` the write continues in the background; `state`'s buffers may be reused
        or donated as soon as this returns. In a single-process run, orbax's own save call runs
        on a writer thread with a snapshot of `state` (`flantune.train.snapshots`); an error of
        that write is raised by the next call of this checkpointer.

        `data_state` is this process's `BatchIterator.get_state().to_json()` (gathered from all
        processes here; every process must call `save`) or an already gathered mapping
        process_index -> JSON. `metrics` (e.g. eval scores) rank checkpoints for `keep_best`.
        """
        self._settle()
        if not (force or self._manager.should_save(step)) or step in self._manager.all_steps():
            return False
        stored_metrics = self._checked_metrics(step, metrics)
        data_states = None if data_state is None else _all_data_states(data_state)
        nbytes = _tree_bytes(state)
        if self._writer is None:
            return self._write(step, nbytes, state, start_fingerprint(state), data_states,
                               stored_metrics)
        copy, pending_fingerprint = snapshot(state)
        self._pending = self._writer.submit(self._write, step, nbytes, copy,
                                            pending_fingerprint, data_states, stored_metrics)
        return True

    def _write(self, step: int, nbytes: int, state: PyTree,
               pending_fingerprint: PendingFingerprint, data_states: dict[str, str] | None,
               metrics: dict[str, float] | None) -> bool:
        """Orbax's save of one step (asynchronous with `async_save`: returns once orbax has
        copied the arrays to host memory). The previous step's background write is finished
        first, so that its error names its own step."""
        with self._write_errors():
            self._manager.wait_until_finished()
        items: dict[str, ocp.args.CheckpointArgs] = {
            STATE_ITEM: ocp.args.StandardSave(state),
            FINGERPRINT_ITEM: FingerprintSave(pending_fingerprint)}
        if data_states is not None:
            items[DATA_STATE_ITEM] = ocp.args.JsonSave(data_states)
        self._saving = (step, nbytes)
        with self._write_errors():
            return self._manager.save(step, args=ocp.args.Composite(**items), metrics=metrics,
                                      force=True)

    @contextlib.contextmanager
    def _write_errors(self) -> Iterator[None]:
        """Turns a failed write of the step being saved into one CheckpointError: a full disk
        (orbax / TensorStore raise it from the background write, as OSError or ValueError)
        names MODEL_DIR, the free and the needed space; other OS errors name the step."""
        try:
            yield
        except CheckpointError:
            raise
        except Exception as err:  # orbax/tensorstore raise many types for a failed write
            if self._saving is None or not (is_disk_full(err) or is_os_error(err)):
                raise
            step, nbytes = self._saving
            self._saving = None
            raise self._write_error(step, nbytes, err) from err

    def _write_error(self, step: int, nbytes: int, err: Exception) -> CheckpointError:
        path = self.step_path(step)
        # From the directory: orbax forgets steps to be replaced when their successor starts.
        done = [s for s in ocp.step.checkpoint_steps(self.directory) if s != step]
        last = (f"The last complete checkpoint, step {max(done)} ({self.step_path(max(done))}),"
                " is intact" if done else "No complete checkpoint was written before")
        partial = sorted(p.name for p in self.directory.iterdir()
                         if p.name.startswith(f"{step}.") and DAMAGED_MARK not in p.name)
        if partial:
            last += f"; the partial write {partial[0]} is removed at the next start"
        full = is_disk_full(err)
        headline = (f"MODEL_DIR {self.directory} is full" if full else
                    f"could not write checkpoint step {step} to {path}")
        detail = write_detail(self.directory, headline, err, self._disk_full_logs.take())
        if not full:
            return CheckpointError(
                f"{headline} ({summary(err)}); check the permissions and the file system of "
                f"MODEL_DIR. {last}. Full error: {detail}")
        copies = checkpoint_copies(self.config)
        return CheckpointError(
            f"{headline}: writing checkpoint step {step} failed with "
            f"{size_text(free_bytes(self.directory))} free; a checkpoint of this run needs about "
            f"{size_text(nbytes)}, and up to {copies} are kept at once "
            f"({size_text(copies * nbytes)}). {last}. Free some space or point MODEL_DIR at a "
            f"larger disk, then resume. Full error: {detail}")

    def _settle(self) -> None:
        """Waits for the save call handed to the writer thread; raises its error, if any."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def _checked_metrics(self, step: int, metrics: Mapping[str, float] | None
                         ) -> dict[str, float] | None:
        if metrics is None:
            return None
        values = {str(k): float(v) for k, v in metrics.items()}
        metric = self.config.best_metric
        if metric and metric not in values:
            raise CheckpointError(
                f"metrics for checkpoint step {step} lack best_metric {metric!r} (given: "
                f"{sorted(values)}); pass it, or set CheckpointConfig.best_metric to one of them.")
        return values

    def restore(self, step: int | None, abstract_state: PyTree, *, fall_back: bool = False
                ) -> tuple[PyTree, str | None]:
        """Restores `step` (None: the latest) into the shapes, dtypes and shardings of
        `abstract_state` (`jax.ShapeDtypeStruct` leaves with `.sharding`, which may be on a
        different mesh than the one saved from). Returns (state, this process's data iterator
        state JSON, or None if the step holds none).

        A step whose files are damaged raises `UnreadableCheckpointError`; with `fall_back`, the
        next earlier step is tried instead (with a warning), down to the oldest kept one. Once
        one is read, the damaged newer ones are moved aside (`_move_aside`), so that training
        saves their steps again and later runs and `flantune eval` no longer find them.
        """
        self.wait_until_finished()
        step = self._existing_step(step)
        candidates = [s for s in reversed(self.all_steps()) if s <= step] if fall_back else [step]
        damaged = []
        for candidate in candidates[:-1]:
            try:
                restored = self._restore_agreed(candidate, abstract_state)
            except UnreadableCheckpointError as err:
                _log.warning("%s Falling back to the previous step.", err)
                damaged.append(candidate)
                continue
            self._move_aside(damaged)
            return restored
        restored = self._restore_agreed(candidates[-1], abstract_state)
        self._move_aside(damaged)
        return restored

    def _restore_agreed(self, step: int, abstract_state: PyTree) -> tuple[PyTree, str | None]:
        """`_restore_step`, failing on every process if it fails on one (each reads its own
        shards), so that all fall back alike."""
        error: UnreadableCheckpointError | None = None
        try:
            restored = self._restore_step(step, abstract_state)
        except UnreadableCheckpointError as err:
            if jax.process_count() == 1:
                raise
            error = err
        if jax.process_count() > 1:
            failed = np.asarray(multihost_utils.process_allgather(
                np.array([error is not None], np.int32))).ravel()
            if error is None and failed.any():
                error = UnreadableCheckpointError(
                    f"checkpoint step {step} at {self.step_path(step)} cannot be read by "
                    f"process(es) {np.flatnonzero(failed).tolist()} (their logs name the file).")
        if error is not None:
            raise error
        return restored

    def _move_aside(self, steps: list[int]) -> None:
        """Renames each damaged step N to `N.damaged-<time>` (outside orbax's step names; kept
        for inspection, never deleted) and says so."""
        if not steps:
            return
        stamp = time.strftime("%Y%m%dT%H%M%S")
        for step in steps:
            path = self.step_path(step)
            target = self.directory / f"{step}{DAMAGED_MARK}{stamp}"
            if jax.process_index() == 0:
                suffix = 1
                while target.exists():
                    suffix += 1
                    target = self.directory / f"{step}{DAMAGED_MARK}{stamp}-{suffix}"
                try:
                    path.rename(target)
                except OSError as err:
                    raise CheckpointError(
                        f"checkpoint step {step} at {path} is damaged, and moving it aside to "
                        f"{target} failed ({err}); move or delete it by hand, then resume."
                    ) from err
                _log.warning(
                    "Moved the damaged checkpoint step %d from %s to %s (kept for inspection; "
                    "delete it when done). Training saves step %d again when it gets there.",
                    step, path, target, step)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("flantune_checkpoint_moved_aside")
        self._manager.reload()

    def _restore_step(self, step: int, abstract_state: PyTree) -> tuple[PyTree, str | None]:
        path = self.step_path(step)
        items = self._read_item_metadata(step, path)
        problems = _tree_differences(items[STATE_ITEM], abstract_state)
        if problems:
            raise CheckpointError(
                f"checkpoint step {step} at {path} does not match this run's train state "
                f"({len(problems)} difference(s): {_summarize(problems)}). MODEL_DIR holds a "
                "checkpoint of another model or optimizer configuration: point MODEL_DIR at a new "
                f"directory or delete {self.directory}; to start from its weights with a fresh "
                "optimizer, pass it as INITIAL_CHECKPOINT_PATH instead.")
        args = {STATE_ITEM: ocp.args.StandardRestore(_with_shardings(abstract_state))}
        if items[DATA_STATE_ITEM]:
            args[DATA_STATE_ITEM] = ocp.args.JsonRestore()
        if (path / FINGERPRINT_ITEM).exists():
            args[FINGERPRINT_ITEM] = ocp.args.JsonRestore()
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(**args))
        except Exception as err:  # orbax/tensorstore raise many types for damaged files
            raise self._unreadable(step, path, err) from err
        if FINGERPRINT_ITEM in args:
            try:
                bad = fingerprint_mismatches(restored[FINGERPRINT_ITEM], restored[STATE_ITEM])
            except FingerprintFormatError as err:
                raise CheckpointError(f"checkpoint step {step} at {path}: {err}.") from None
            if bad:
                raise self._unreadable(step, path, ChecksumMismatch(
                    f"{len(bad)} array(s) differ from the checksum saved with them: "
                    f"{_summarize(bad)}"), array=bad[0].split(" ")[0])
        data_states = restored.get(DATA_STATE_ITEM) if DATA_STATE_ITEM in args else None
        return restored[STATE_ITEM], self._own_data_state(step, path, data_states)

    def _existing_step(self, step: int | None) -> int:
        steps = self.all_steps()
        if not steps:
            raise CheckpointError(f"MODEL_DIR {self.directory} holds no complete checkpoint to "
                                  "restore; check the path.")
        if step is None:
            return steps[-1]
        if step not in steps:
            raise CheckpointError(f"MODEL_DIR {self.directory} has no checkpoint for step {step}; "
                                  f"saved steps: {steps}.")
        return step

    def _read_item_metadata(self, step: int, path: epath.Path) -> dict[str, Any]:
        try:
            metadata = self._manager.item_metadata(step)
        except Exception as err:  # unreadable or missing metadata files
            raise self._unreadable(step, path, err) from err
        # Orbax keeps no metadata for JSON items, so their presence is read from the directory.
        items = {STATE_ITEM: metadata.get(STATE_ITEM),
                 DATA_STATE_ITEM: (path / DATA_STATE_ITEM).exists()}
        if items[STATE_ITEM] is None:
            raise CheckpointError(
                f"checkpoint step {step} at {path} has no '{STATE_ITEM}' item, so it is not a "
                "flantune train-state checkpoint; point MODEL_DIR at a new directory or pass "
                "this path as INITIAL_CHECKPOINT_PATH if it holds compatible weights.")
        return items

    def _unreadable(self, step: int, path: epath.Path, err: Exception, array: str = ""
                    ) -> UnreadableCheckpointError:
        """One line naming the step, the file (or array) and what to do; the full error goes
        to the detail log in MODEL_DIR."""
        earlier = [s for s in self.all_steps() if s < step]
        hint = (f"resume from step {earlier[-1]} with flantune.CheckpointConfig."
                f"fall_back_to_previous = True (step {step} is then moved aside to "
                f"{step}{DAMAGED_MARK}<time> and saved again) or delete {path}"
                if earlier else f"delete {path} to start afresh")
        headline = f"checkpoint step {step} at {path} cannot be read"
        detail = write_detail(self.directory, headline, err)
        what = (f"array {array}, {type(err).__name__}" if array else summary(err))
        return UnreadableCheckpointError(
            f"{headline} ({what}); the files are damaged or incomplete: {hint}. Full error: "
            f"{detail}")

    @staticmethod
    def _own_data_state(step: int, path: epath.Path, data_states: Mapping[str, str] | None
                        ) -> str | None:
        if data_states is None:
            return None
        index = str(jax.process_index())
        if index not in data_states or len(data_states) != jax.process_count():
            raise CheckpointError(
                f"checkpoint step {step} at {path} holds the data iterator positions of "
                f"{len(data_states)} process(es) ({sorted(data_states, key=int)}), but this run "
                f"has {jax.process_count()}; resume with the same number of processes, or start "
                "from its weights with INITIAL_CHECKPOINT_PATH.")
        return data_states[index]

    def wait_until_finished(self) -> None:
        """Blocks until a background save has been written completely."""
        self._settle()
        with self._write_errors():
            self._manager.wait_until_finished()

    def close(self) -> None:
        """Finishes pending saves and releases the manager's resources."""
        try:
            self._settle()
            with self._write_errors():
                self._manager.wait_until_finished()
        finally:
            self._manager.close()
            if self._writer is not None:
                self._writer.shutdown()
            for name in _ORBAX_LOGGERS:
                logging.getLogger(name).removeFilter(self._disk_full_logs)
            for record in self._disk_full_logs.take():  # held back, but no error reported them
                _log.error("%s", record)

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _place(array: Any, abstract: jax.ShapeDtypeStruct) -> jax.Array:
    """`array` as a global jax.Array in `abstract`'s dtype and sharding (each process fills
    only its own shards, so this works across processes)."""
    host = np.asarray(array).astype(abstract.dtype, copy=False)
    return jax.make_array_from_callback(host.shape, abstract.sharding, lambda index: host[index])


def load_step_params(state_path: epath.Path, abstract_params: PyTree, role: str) -> PyTree:
    """The params of a training step's state item, checked against the step's checksums."""
    checkpointer = ocp.PyTreeCheckpointer()
    try:
        return _restore_params(checkpointer, state_path, abstract_params, role)
    finally:
        checkpointer.close()


def _restore_params(checkpointer: ocp.Checkpointer, state_path: epath.Path,
                    abstract_params: PyTree, role: str) -> PyTree:
    """Only the params of a saved train state (orbax's partial restore)."""
    try:
        stored = checkpointer.metadata(state_path).item_metadata.tree
    except Exception as err:  # unreadable metadata
        raise _unreadable_path(role, state_path, state_path.parent.parent, err) from err
    if "params" not in stored:
        raise CheckpointError(f"{role} {state_path} has no 'params' in its train "
                              f"state (found {sorted(stored)}).")
    problems = _tree_differences(stored["params"], abstract_params)
    if problems:
        raise CheckpointError(
            f"{role} {state_path}: its params do not match this run's model "
            f"({len(problems)} difference(s): {_summarize(problems)}); use a checkpoint of the "
            "same model configuration.")
    target = {"params": _with_shardings(abstract_params)}
    try:
        restored = checkpointer.restore(state_path, args=ocp.args.PyTreeRestore(
            item=target, restore_args=_restore_args(target), partial_restore=True))
    except Exception as err:  # orbax/tensorstore raise many types for damaged files
        raise _unreadable_path(role, state_path, state_path.parent.parent, err) from err
    _verify_params(role, state_path, restored["params"])
    return restored["params"]


def _verify_params(role: str, state_path: epath.Path, params: PyTree) -> None:
    """Checks restored params against the checksums saved in their step (if it has any)."""
    fingerprint_path = state_path.parent / FINGERPRINT_ITEM / "metadata"
    if not fingerprint_path.exists():
        return
    try:
        stored = json.loads(fingerprint_path.read_text())
        prefix = "params/"
        if "format" in stored:
            stored = {**stored, "arrays": {key[len(prefix):]: value
                                           for key, value in stored["arrays"].items()
                                           if key.startswith(prefix)}}
        else:
            stored = {key[len(prefix):]: value for key, value in stored.items()
                      if key.startswith(prefix)}
        bad = fingerprint_mismatches(stored, params)
    except FingerprintFormatError as err:
        raise CheckpointError(f"{role} {state_path}: {err}.") from None
    except (ValueError, KeyError, TypeError, AttributeError) as err:  # a damaged JSON file
        raise _unreadable_path(role, fingerprint_path, state_path.parent.parent, err) from err
    if bad:
        err = ChecksumMismatch(f"{len(bad)} array(s) differ from the checksum saved with them: "
                               f"{_summarize(bad)}")
        raise _unreadable_path(role, state_path, state_path.parent.parent, err,
                               what=f"array params/{bad[0].split(' ')[0]}")


def _unreadable_path(role: str, path: epath.Path, log_directory: epath.Path, err: Exception,
                     what: str = "") -> UnreadableCheckpointError:
    """One line naming `role`, the path, the damaged file or array and what to do; the full
    error goes to the detail log in `log_directory` (the run's MODEL_DIR)."""
    headline = f"{role} {path} cannot be read"
    detail = write_detail(log_directory, headline, err)
    what = f"{what}, {type(err).__name__}" if what else summary(err)
    return UnreadableCheckpointError(
        f"{headline} ({what}); its files are damaged or incomplete: "
        f"{_other_checkpoint_hint(path, log_directory)}. Full error: {detail}")


def _other_checkpoint_hint(path: epath.Path, run_dir: epath.Path) -> str:
    """What to use instead of a damaged step of a training run (or any damaged checkpoint)."""
    step = next((int(p.name) for p in (path, *path.parents) if p.parent == run_dir
                 and p.name.isdigit()), None)
    try:
        earlier = [s for s in ocp.step.checkpoint_steps(run_dir) if step is not None and s < step]
    except OSError:
        earlier = []
    if not earlier:
        return "use another checkpoint"
    return (f"pass an earlier step directory instead ({run_dir / str(max(earlier))}), or resume "
            "training with flantune.CheckpointConfig.fall_back_to_previous = True, which moves "
            f"step {step} aside and saves it again")


def _hf_scan_layers(directory: epath.Path, abstract_params: PyTree, role: str) -> bool:
    """Whether `abstract_params` is the scanned (layers stacked) or the per-layer layout of the
    model in `directory`'s config.json; checked before any weight is read."""
    config_path = directory / "config.json"
    try:
        config = config_from_hf_dict(json.loads(config_path.read_text()),
                                     source=str(config_path))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{role} {config_path}: invalid JSON ({err}).") from err
    except HFCheckpointError as err:
        raise CheckpointError(f"{role} {directory}: {err}") from err
    closest: tuple[Any, list[str]] | None = None
    for scan_layers in (False, True):
        candidate = dataclasses.replace(config, scan_layers=scan_layers)
        # jax.eval_shape of the pure dict, not nnx.eval_shape: under a mesh and logical axis
        # rules (as in training) nnx would turn each parameter's axes into a sharding with
        # Flax's own rule semantics, which may map two axes to one mesh axis.
        expected = jax.eval_shape(
            lambda c=candidate: model_params(build_model(c, nnx.Rngs(0))))
        problems = _tree_differences(expected, abstract_params)
        if not problems:
            return scan_layers
        if closest is None or len(problems) < len(closest[1]):
            closest = (candidate, problems)
    candidate, problems = closest
    raise CheckpointError(
        f"{role} {directory}: the converted model ({candidate}) does not match this "
        f"run's model ({len(problems)} difference(s): {_summarize(problems)}); make the run's "
        "model configuration match the checkpoint's config.json.")


def _load_hf_params(directory: epath.Path, abstract_params: PyTree, role: str) -> PyTree:
    scan_layers = _hf_scan_layers(directory, abstract_params, role)
    try:
        _, params = load_hf_checkpoint(directory, scan_layers=scan_layers)
    except HFCheckpointError as err:
        raise CheckpointError(f"{role} {directory}: {err}") from err
    return place_params(params, abstract_params)


def place_params(params: PyTree, abstract_params: PyTree) -> PyTree:
    """Host arrays `params` as global arrays in `abstract_params`' dtypes and shardings."""
    flat_params = dict(flat_items(params))
    return jax.tree_util.tree_map_with_path(
        lambda path, abstract: _place(flat_params[path_key(path)], abstract),
        _with_shardings(abstract_params))


def _load_native_params(directory: epath.Path, abstract_params: PyTree, role: str) -> PyTree:
    """The params of a flantune parameter checkpoint (`flantune.models.convert.save_params`)."""
    params_path = directory / checkpoint_kinds.PARAMS_DIR
    checkpointer = ocp.PyTreeCheckpointer()
    try:
        try:
            stored = checkpointer.metadata(params_path).item_metadata.tree
        except Exception as err:  # unreadable metadata
            raise _unreadable_path(role, params_path, directory, err) from err
        problems = _tree_differences(stored, abstract_params)
        if problems:
            raise CheckpointError(
                f"{role} {directory}: its params do not match this run's model "
                f"({len(problems)} difference(s): {_summarize(problems)}); use a checkpoint of "
                "the same model configuration (its config.json; `flantune convert "
                "hf-to-flantune --scan-layers` writes stacked layers).")
        target = _with_shardings(abstract_params)
        try:
            return checkpointer.restore(params_path, args=ocp.args.PyTreeRestore(
                item=target, restore_args=_restore_args(target)))
        except Exception as err:  # orbax/tensorstore raise many types for damaged files
            raise _unreadable_path(role, params_path, directory, err) from err
    finally:
        checkpointer.close()


def _refuse_adapter_run(location: checkpoint_kinds.CheckpointLocation, role: str) -> None:
    """An adapter run's steps hold only adapter parameters: name what to do instead."""
    try:
        reference = read_reference(location.run_dir)
    except AdapterReferenceError as err:
        raise CheckpointError(f"{role} {location.path}: {err}") from None
    if reference is not None:
        raise CheckpointError(
            f"{role} {location.path} is an adapter checkpoint ({reference.adapter}) trained on "
            f"the base {reference.base_path}: it holds only the adapter. Evaluate it with "
            "ADAPTER_PATH set to it and CHECKPOINT_PATH to that base, or merge it into a full "
            "checkpoint with `flantune convert flantune-to-hf --merge`.")


def load_initial_params(path: str | os.PathLike, abstract_params: PyTree, *,
                        role: str = "INITIAL_CHECKPOINT_PATH",
                        model: ModelConfig | None = None) -> PyTree:
    """Parameters to fine-tune from (with a fresh optimizer) or to evaluate, placed with
    `abstract_params`' dtypes and shardings. `path` is any kind of checkpoint
    `flantune.train.checkpoint_kinds.locate_checkpoint` accepts: a flantune MODEL_DIR (its latest
    step), a step directory inside one, a flantune parameter checkpoint (config.json + params/)
    or a Hugging Face checkpoint directory (config.json + *.safetensors). `role` names the path
    in errors (e.g. 'CHECKPOINT_PATH'). With `model` (the run's model configuration), a
    checkpoint that records another architecture (flantune.train.architecture_check) is an
    error even where the shapes agree."""
    try:
        location = checkpoint_kinds.locate_checkpoint(path, role)
    except checkpoint_kinds.CheckpointKindError as err:
        raise CheckpointError(str(err)) from None
    if location.run_dir is not None:
        _refuse_adapter_run(location, role)
    if model is not None:
        problem = architecture_check.check_architecture(location, model, role)
        if problem:
            raise CheckpointError(problem)
    if location.kind == checkpoint_kinds.HUGGING_FACE:
        return _load_hf_params(location.path, abstract_params, role)
    if location.kind == checkpoint_kinds.PARAMS:
        return _load_native_params(location.path, abstract_params, role)
    return load_step_params(location.state_path, abstract_params, role)


__all__ = [
    "CheckpointConfig",
    "CheckpointError",
    "Checkpointer",
    "UnreadableCheckpointError",
    "load_initial_params",
]
