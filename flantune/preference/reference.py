"""The reference model of a preference run: which weights, their record in MODEL_DIR, and the
cache of precomputed reference log-probabilities.

- ``adapter_disabled``: an adapter run's frozen base, scored without the adapter (the same
  arrays the policy uses, so no second copy of the weights; TRL's reference for peft models);
- ``initial``: a frozen copy of the policy's starting point (INITIAL_CHECKPOINT_PATH, or the
  random initialisation of RANDOM_SEED);
- a path: any checkpoint ``INITIAL_CHECKPOINT_PATH`` accepts.

MODEL_DIR/objective.json records the preference settings and the reference (its path and a
fingerprint of its parameters); a resumed run must have the same. With
``precompute_reference`` the reference's log-probabilities of every training batch are computed
before the first step and kept in MODEL_DIR/reference_logps/ (one file per process, only the
pairs' values), keyed by the data configuration, the batch size and the reference.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import zipfile
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from flantune.data.preference.converter import pair_slots
from flantune.preference.config import ADAPTER_DISABLED, AUTO, INITIAL, PreferenceConfig
from flantune.train.adapter_reference import RANDOM_BASE, base_fingerprint
from flantune.train.checkpoint_kinds import absolute_path
from flantune.train.checkpoints import load_initial_params
from flantune.train.objective import OBJECTIVE_FILE, ObjectiveContext
from flantune.train.state import ModelSpec, placed, state_keys

PyTree = Any
CACHE_DIR = "reference_logps"
FORMAT = 1


class PreferenceReferenceError(ValueError):
    """A reference model that cannot be used, or one that differs from the run's record."""


@dataclasses.dataclass(frozen=True)
class Reference:
    """The resolved reference: ``kind`` is ``adapter_disabled`` or ``params``."""

    kind: str
    path: str
    spec: ModelSpec  # scored without any adapter
    params: PyTree | None  # None for adapter_disabled (the frozen base is used)
    shardings: PyTree | None
    fingerprint: str


def resolve_kind(config: PreferenceConfig, adapted: bool) -> str:
    """``adapter_disabled``, ``initial`` or a path, for ``reference='auto'`` by the run."""
    kind = config.reference
    if kind == AUTO:
        return ADAPTER_DISABLED if adapted else INITIAL
    if kind == ADAPTER_DISABLED and not adapted:
        raise PreferenceReferenceError(
            "PreferenceConfig.reference = 'adapter_disabled' needs an adapter "
            "run (e.g. --gin_file=gin_configs/peft/lora.gin); for full "
            "fine-tuning use 'initial' (a frozen copy of the starting model) or "
            "a checkpoint path.")
    if kind == INITIAL and adapted:
        raise PreferenceReferenceError(
            "PreferenceConfig.reference = 'initial' in an adapter run would "
            "load the base a second time; use 'adapter_disabled' (the base "
            "with the adapter switched off: the same weights) or 'auto'.")
    return kind


def load_reference(config: PreferenceConfig, context: ObjectiveContext,
                   show=print) -> Reference:
    """The run's reference model (see the module docstring)."""
    run = context.config
    plain = context.base_spec
    kind = resolve_kind(config, context.spec.adapter is not None)
    if kind == ADAPTER_DISABLED:
        return Reference(kind=kind, path="the adapter run's base", spec=plain, params=None,
                         shardings=None, fingerprint=base_fingerprint(context.frozen))
    # The plain model's parameters: an adapter run's frozen tree has their paths.
    shardings = (context.frozen_shardings if context.spec.adapter is not None
                 else context.param_shardings)
    if kind == INITIAL and not run.initial_checkpoint_path:
        path = RANDOM_BASE.format(seed=run.seed)
        if jax.process_index() == 0:
            show(f"No INITIAL_CHECKPOINT_PATH: the reference is the random initialisation the "
                 f"policy starts from ({path}); set INITIAL_CHECKPOINT_PATH to the instruction-"
                 "tuned model.")
        init_key = state_keys(run.seed)[0]
        params = jax.jit(plain.init_params, out_shardings=shardings)(init_key)
    else:
        path = str(run.initial_checkpoint_path) if kind == INITIAL else kind
        role = ("INITIAL_CHECKPOINT_PATH" if kind == INITIAL
                else "PreferenceConfig.reference")
        try:
            params = load_initial_params(path, placed(plain.abstract_params(), shardings),
                                         role=role, model=run.model)
        except (ValueError, OSError) as err:
            raise PreferenceReferenceError(f"The reference model: {err}") from None
    return Reference(kind="params", path=path, spec=plain, params=params, shardings=shardings,
                     fingerprint=base_fingerprint(params))


def objective_record(config: PreferenceConfig, reference: Reference) -> dict[str, Any]:
    return {"format": FORMAT, "objective": "preference", "preference": config.to_dict(),
            "reference": {"kind": reference.kind, "path": reference.path,
                          "fingerprint": reference.fingerprint}}


def _binding(record: Mapping[str, Any]) -> dict[str, Any]:
    """What a resumed run must keep: the loss, its settings and the reference's weights (its
    fingerprint; the path may be written another way). Evaluation and precomputation may
    change."""
    settings = record.get("preference", {}) or {}
    reference = record.get("reference", {}) or {}
    return {"loss": settings.get("loss"), "beta": settings.get("beta"),
            "label_smoothing": settings.get("label_smoothing"),
            "reference kind": reference.get("kind"),
            "reference fingerprint": reference.get("fingerprint")}


def check_or_write_record(model_dir: str, record: Mapping[str, Any], resuming: bool) -> None:
    """Writes MODEL_DIR/objective.json, or on resume checks the run has the recorded
    settings and reference."""
    path = absolute_path(model_dir) / OBJECTIVE_FILE
    if resuming:
        if not path.exists():
            raise PreferenceReferenceError(
                f"{model_dir} holds checkpoints of a run without a preference "
                "objective (no objective.json); a preference run needs a "
                "MODEL_DIR of its own (INITIAL_CHECKPOINT_PATH = that run).")
        try:
            stored = json.loads(path.read_text())
        except ValueError as err:
            raise PreferenceReferenceError(
                f"{path} is damaged ({err}); it records the run's preference "
                "settings and reference: restore it from a copy of the "
                "run.") from None
        differences = [f"{key}: recorded {_binding(stored).get(key)!r}, now "
                       f"{_binding(record)[key]!r}" for key in _binding(record)
                       if _binding(stored).get(key) != _binding(record)[key]]
        if differences:
            raise PreferenceReferenceError(
                f"Resuming {model_dir} with other preference settings than it "
                "was trained with: " + "; ".join(differences) + ". Use the "
                "recorded ones, or start a new MODEL_DIR.")
        return
    if jax.process_index() == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(OBJECTIVE_FILE + ".tmp")
        temporary.write_text(json.dumps(record, indent=1))
        temporary.rename(path)


def pair_valid(batch: Mapping[str, np.ndarray]) -> np.ndarray:
    """[rows, pair slots] bool: the slots that hold a pair (both sequences have completion
    tokens), the rule of flantune.preference.losses.pair_log_probs, in numpy."""
    segments = np.asarray(batch["decoder_segment_ids"])
    weights = np.asarray(batch["decoder_loss_weights"], np.float64)
    rows, length = segments.shape
    slots = pair_slots(length)
    counts = np.zeros((rows, 2 * slots + 1))
    np.add.at(counts, (np.repeat(np.arange(rows), length), segments.reshape(-1)),
              weights.reshape(-1))
    return (counts[:, 1::2] > 0) & (counts[:, 2::2] > 0)


class ReferenceCache:
    """Precomputed reference log-probabilities of this process's training batches, by step.

    Only the values of slots holding a pair are stored; ``features`` scatters them back into
    the ``reference_chosen_logps`` / ``reference_rejected_logps`` batch features."""

    def __init__(self, model_dir: str, key: str):
        self.key = key
        self.path = (absolute_path(model_dir) / CACHE_DIR
                     / f"process_{jax.process_index()}.npz")
        self.values: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.checksums: dict[int, str] = {}

    @staticmethod
    def make_key(data_fingerprint: str, batch_size: int, reference_fingerprint: str,
                 model: Mapping[str, Any]) -> str:
        text = json.dumps([FORMAT, data_fingerprint, batch_size, reference_fingerprint,
                           dict(model)], sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    @staticmethod
    def batch_checksum(batch: Mapping[str, np.ndarray]) -> str:
        """A digest of the tokens and loss weights the values were computed on."""
        digest = hashlib.sha256()
        for name in ("decoder_target_tokens", "decoder_loss_weights", "decoder_segment_ids"):
            digest.update(np.ascontiguousarray(batch[name], np.int32).tobytes())
        return digest.hexdigest()[:16]

    def load(self) -> None:
        """Reads the cache file if it belongs to this run (another key: started afresh)."""
        if not self.path.exists():
            return
        try:
            with np.load(self.path, allow_pickle=False) as stored:
                if str(stored["key"]) != self.key:
                    return
                steps, offsets = stored["steps"], stored["offsets"]
                chosen, rejected = stored["chosen"], stored["rejected"]
                checksums = [str(c) for c in stored["checksums"]]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            raise PreferenceReferenceError(
                f"{self.path} is damaged ({type(err).__name__}: {err}); delete "
                f"{self.path.parent} to compute the reference log-probabilities again.") from None
        for i, step in enumerate(steps):
            part = slice(int(offsets[i]), int(offsets[i + 1]))
            self.values[int(step)] = (chosen[part], rejected[part])
            self.checksums[int(step)] = checksums[i]

    def save(self) -> None:
        """Writes the cache atomically (a rename)."""
        steps = sorted(self.values)
        sizes = [self.values[s][0].size for s in steps]
        buffer = io.BytesIO()
        empty = np.zeros(0, np.float32)
        np.savez(buffer, key=np.asarray(self.key), steps=np.asarray(steps, np.int64),
                 offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
                 chosen=np.concatenate([self.values[s][0] for s in steps] or [empty]),
                 rejected=np.concatenate([self.values[s][1] for s in steps] or [empty]),
                 checksums=np.asarray([self.checksums[s] for s in steps], dtype="U16"))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_bytes(buffer.getvalue())
        os.replace(temporary, self.path)

    def store(self, step: int, batch: Mapping[str, np.ndarray], chosen: np.ndarray,
              rejected: np.ndarray) -> None:
        valid = pair_valid(batch)
        self.values[step] = (np.asarray(chosen, np.float32)[valid],
                             np.asarray(rejected, np.float32)[valid])
        self.checksums[step] = self.batch_checksum(batch)

    def features(self, batch: dict[str, np.ndarray], step: int) -> dict[str, np.ndarray]:
        """``batch`` with the reference log-probabilities of step ``step`` added."""
        if step not in self.values:
            raise PreferenceReferenceError(
                f"No precomputed reference log-probabilities for step {step} in "
                f"{self.path}; delete {self.path.parent} to compute them again.")
        valid = pair_valid(batch)
        chosen, rejected = self.values[step]
        if self.checksums.get(step) != self.batch_checksum(batch):
            raise PreferenceReferenceError(
                f"{self.path} holds reference log-probabilities of other tokens than step "
                f"{step}'s batch: the data (records, template, tokenizer) changed since they "
                f"were computed; delete {self.path.parent} to compute them again.")
        out = dict(batch)
        for name, values in (("reference_chosen_logps", chosen),
                             ("reference_rejected_logps", rejected)):
            full = np.zeros(valid.shape, np.float32)
            full[valid] = values
            out[name] = full
        return out
