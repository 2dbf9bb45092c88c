"""What an adapter checkpoint was trained on: MODEL_DIR/adapter.json names the adapter, the
model and the base checkpoint (its path and a fingerprint of its parameters).

An adapter run's checkpoints hold only the adapter parameters and their optimizer state; the
base parameters are loaded from the base checkpoint every time, so a resume, an evaluation or
an export checks that they are the same bits the adapter was trained on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

import jax

from flantune.models.config import ModelConfig, config_from_dict, config_to_dict
from flantune.peft.config import AdapterConfig, adapter_from_dict, adapter_to_dict
from flantune.train.architecture_check import architecture_differences
from flantune.train.checkpoint_kinds import absolute_path
from flantune.train.fingerprints import fingerprint

PyTree = Any
ADAPTER_FILE = "adapter.json"
FORMAT = 1
RANDOM_BASE = "random initialisation (seed {seed})"


class AdapterReferenceError(ValueError):
    """An adapter and a base checkpoint that do not belong together, or an unreadable
    adapter.json."""


@dataclasses.dataclass(frozen=True)
class AdapterReference:
    adapter: AdapterConfig
    model: ModelConfig
    base_path: str
    base_fingerprint: str

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "adapter": adapter_to_dict(self.adapter),
                           "model": config_to_dict(self.model),
                           "base": {"path": self.base_path,
                                    "fingerprint": self.base_fingerprint}}, indent=1)


def base_fingerprint(params: PyTree) -> str:
    """A SHA-256 over every base array's path, dtype, shape and exact checksum
    (flantune.train.fingerprints): equal only for the same bits, on any mesh."""
    arrays = fingerprint(params)["arrays"]
    text = json.dumps(arrays, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def read_reference(model_dir: str | os.PathLike) -> AdapterReference | None:
    """MODEL_DIR's adapter.json, or None when it has none (not an adapter run)."""
    path = absolute_path(model_dir) / ADAPTER_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        return AdapterReference(
            adapter=adapter_from_dict(data["adapter"]), model=config_from_dict(data["model"]),
            base_path=str(data["base"]["path"]),
            base_fingerprint=str(data["base"]["fingerprint"]))
    except (ValueError, KeyError, TypeError) as err:
        raise AdapterReferenceError(
            f"{path} is damaged or not an adapter reference ({type(err).__name__}: {err}); "
            "it names the base checkpoint this adapter was trained on: restore it from a copy "
            "of the run") from None


def write_reference(model_dir: str | os.PathLike, reference: AdapterReference) -> None:
    """Writes adapter.json (process 0; atomically, by a rename)."""
    if jax.process_index() != 0:
        return
    directory = absolute_path(model_dir)
    directory.mkdir(parents=True, exist_ok=True)
    temporary = directory / (ADAPTER_FILE + ".tmp")
    temporary.write_text(reference.to_json())
    temporary.rename(directory / ADAPTER_FILE)


def check_reference(stored: AdapterReference, current: AdapterReference, where: str, *,
                    resuming: bool) -> None:
    """Raises AdapterReferenceError naming every way `current` (this run) differs from the
    reference the adapter in `where` was trained with. Resuming, the adapter's settings must
    be the same; evaluating, only those that shape or scale its parameters (not dropout)."""
    problems = []
    adapter_now = current.adapter
    if not resuming and hasattr(stored.adapter, "dropout"):
        adapter_now = dataclasses.replace(adapter_now, dropout=stored.adapter.dropout)
    if stored.adapter != adapter_now:
        problems.append(f"the adapter differs: trained as {stored.adapter}, configured now as "
                        f"{current.adapter}")
    model = architecture_differences(stored.model, current.model)
    if stored.model.scan_layers != current.model.scan_layers:
        model.append(f"scan_layers: adapter {stored.model.scan_layers}, run "
                     f"{current.model.scan_layers} (the adapter's parameters are stacked per "
                     "layer only with scan_layers)")
    if model:
        problems.append("the model differs: " + "; ".join(model))
    if stored.base_fingerprint != current.base_fingerprint:
        problems.append(
            f"the base parameters differ: the adapter was trained on {stored.base_path} "
            f"(fingerprint {stored.base_fingerprint[:16]}), the base given now is "
            f"{current.base_path} (fingerprint {current.base_fingerprint[:16]})")
    if problems:
        raise AdapterReferenceError(
            f"The adapter in {where} does not belong to this run: " + "; ".join(problems)
            + f". Use the base checkpoint {stored.base_path} and the settings the adapter was "
            "trained with" + (", or start a new MODEL_DIR." if resuming else "."))
