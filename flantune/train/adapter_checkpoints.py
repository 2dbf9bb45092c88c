"""Reading an adapter for evaluation, inference or export: a flantune adapter run (MODEL_DIR
or one of its steps, with adapter.json) or a Hugging Face peft adapter directory, on top of a
base checkpoint of any kind."""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

import jax
from etils import epath

from flantune.models.config import ModelConfig
from flantune.models.convert.errors import CheckpointError as ConvertError
from flantune.peft.config import AdapterConfig
from flantune.peft.hf_format import is_peft_adapter, load_peft_adapter
from flantune.train import checkpoint_kinds
from flantune.train.adapter_reference import (
    RANDOM_BASE,
    AdapterReference,
    AdapterReferenceError,
    base_fingerprint,
    check_reference,
    read_reference,
)
from flantune.train.checkpoints import (
    CheckpointError,
    load_initial_params,
    load_step_params,
    place_params,
)
from flantune.train.state import ModelSpec, placed, state_keys

PyTree = Any
FLANTUNE, PEFT = "flantune", "peft"
ROLE = "ADAPTER_PATH"


@dataclasses.dataclass(frozen=True)
class AdapterSource:
    """An adapter found at `path`: a flantune run's step (`state_path`, `reference`) or a peft
    directory (`peft_params`, read already)."""

    kind: str
    path: epath.Path
    adapter: AdapterConfig
    reference: AdapterReference | None = None
    state_path: epath.Path | None = None
    peft_params: PyTree = None


def locate_adapter(path: str | os.PathLike, model: ModelConfig) -> AdapterSource:
    """The adapter at `path`, or a CheckpointError saying what an adapter path must be."""
    text = os.fspath(path)
    if is_peft_adapter(text):
        try:
            adapter, params = load_peft_adapter(text, model)
        except ConvertError as err:
            raise CheckpointError(f"{ROLE} {text}: {err}") from None
        return AdapterSource(PEFT, epath.Path(os.path.abspath(text)), adapter,
                             peft_params=params)
    try:
        location = checkpoint_kinds.locate_checkpoint(text, ROLE)
    except checkpoint_kinds.CheckpointKindError as err:
        raise CheckpointError(f"{err} An adapter is an adapter run's MODEL_DIR or step "
                              "(with adapter.json) or a peft directory (adapter_config.json + "
                              "adapter_model.safetensors).") from None
    reference = None
    if location.run_dir is not None:
        try:
            reference = read_reference(location.run_dir)
        except AdapterReferenceError as err:
            raise CheckpointError(str(err)) from None
    if reference is None:
        raise CheckpointError(f"{ROLE} {location.path} is a full model checkpoint, not an "
                              "adapter (no adapter.json beside its steps); pass it as "
                              "CHECKPOINT_PATH and leave ADAPTER_PATH unset.")
    return AdapterSource(FLANTUNE, location.path, reference.adapter, reference=reference,
                         state_path=location.state_path)


def random_base_seed(base_path: str) -> int | None:
    """The seed of a base recorded as a random initialisation, or None for a checkpoint path."""
    match = re.fullmatch(re.escape(RANDOM_BASE).replace(r"\{seed\}", r"(-?\d+)"), base_path)
    return int(match.group(1)) if match else None


def load_base(base_path: str, spec: ModelSpec, frozen_shardings: PyTree | None = None,
              role: str = "CHECKPOINT_PATH") -> PyTree:
    """The frozen base parameters of `spec` from `base_path`: a checkpoint of any kind, or the
    random initialisation an adapter run without INITIAL_CHECKPOINT_PATH recorded."""
    shapes = spec.abstract_frozen()
    if frozen_shardings is None:  # one process, one device
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        frozen_shardings = jax.tree.map(lambda _: device, shapes)
    seed = random_base_seed(base_path)
    if seed is not None:
        init_key = state_keys(seed)[0]
        return jax.jit(lambda: spec.split(spec.init_params(init_key))[1],
                       out_shardings=frozen_shardings)()
    return load_initial_params(base_path, placed(shapes, frozen_shardings), role=role,
                               model=spec.config)


def load_adapted_params(checkpoint_path: str, adapter_path: str, model: ModelConfig,
                        param_shardings_of: Any) -> tuple[ModelSpec, PyTree, PyTree]:
    """(the adapted model's spec, its full parameters, their shardings): the base from
    `checkpoint_path`, the adapter from `adapter_path`. A flantune adapter is checked against
    the base it was trained on (fingerprint, model, scan layout); a peft adapter records no
    fingerprint. `param_shardings_of(spec)` gives the full parameter tree's shardings."""
    source = locate_adapter(adapter_path, model)
    spec = ModelSpec.from_config(model, source.adapter)
    shardings = param_shardings_of(spec)
    trainable_shardings, frozen_shardings = spec.split(shardings)
    base = load_base(str(checkpoint_path), spec, frozen_shardings)
    target = placed(spec.abstract_trainable(), trainable_shardings)
    if source.kind == PEFT:
        adapter = place_params(source.peft_params, target)
    else:
        current = AdapterReference(source.adapter, model, str(checkpoint_path),
                                   base_fingerprint(base))
        try:
            check_reference(source.reference, current, str(source.path), resuming=False)
        except AdapterReferenceError as err:
            raise CheckpointError(str(err)) from None
        adapter = load_step_params(source.state_path, target, ROLE)
    return spec, spec.join(adapter, base), shardings
