"""A model with an adapter attached, and the split of its parameters into the trainable
adapter and the frozen base."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import jax
from flax import nnx
from flax.nnx import traversals

from flantune.models.build import build_model
from flantune.models.config import ModelConfig
from flantune.peft.config import AdapterConfig, LoraConfig, PrefixConfig, PromptConfig
from flantune.peft.lora import AdapterParam, attach_lora
from flantune.peft.prefix import attach_prefix
from flantune.peft.prompt import attach_prompt
from flantune.peft.targets import Projection

Params = dict[str, Any]
KeyPath = tuple[Hashable, ...]

# The adapter's initial values are drawn from the run's key folded with this (so they do not
# depend on how the base parameters were drawn).
_ADAPTER_KEY_SALT = 0x4C6F5241


def attach(model: nnx.Module, model_config: ModelConfig, adapter: AdapterConfig,
           key: jax.Array) -> list[Projection]:
    """Attaches `adapter` to `model` (in place); returns the adapted projections (LoRA)."""
    if isinstance(adapter, LoraConfig):
        return attach_lora(model, model_config, adapter, key)
    if isinstance(adapter, PrefixConfig):
        attach_prefix(model, model_config, adapter, key)
        return []
    if isinstance(adapter, PromptConfig):
        attach_prompt(model, model_config, adapter, key)
        return []
    raise TypeError(f"unknown adapter configuration {type(adapter).__name__}")


def build_adapted_model(model_config: ModelConfig, adapter: AdapterConfig | None,
                        rngs: nnx.Rngs | None = None) -> nnx.Module:
    """The model of `model_config` (randomly initialised from `rngs`, as `build_model` does)
    with `adapter` attached, its initial values drawn from the rngs' params root key; without
    adapter the plain model."""
    rngs = rngs if rngs is not None else nnx.Rngs(0)
    # From the stream's root key, not its next draw: the adapter does not depend on how many
    # keys building the base took (scanned layers take them differently) and the base is
    # drawn as without an adapter.
    adapter_key = jax.random.fold_in(rngs.params.key.get_value(), _ADAPTER_KEY_SALT)
    model = build_model(model_config, rngs)
    if adapter is not None:
        attach(model, model_config, adapter, adapter_key)
    return model


def adapter_paths(abstract_state: nnx.State) -> frozenset[KeyPath]:
    """Paths (as in `to_pure_dict()`) of the adapter parameters of an adapted model's state."""
    return frozenset(tuple(path) for path, variable in nnx.to_flat_state(abstract_state)
                     if isinstance(variable, AdapterParam))


def split_params(params: Params, trainable: frozenset[KeyPath]) -> tuple[Params, Params]:
    """(the parameters at `trainable` paths, the rest), both nested dicts."""
    flat = traversals.flatten_mapping(params)
    inside = {k: v for k, v in flat.items() if k in trainable}
    outside = {k: v for k, v in flat.items() if k not in trainable}
    return traversals.unflatten_mapping(inside), traversals.unflatten_mapping(outside)


def join_params(trainable: Params, frozen: Params | None) -> Params:
    """One nested dict of both parts (they have no path in common)."""
    if not frozen:
        return trainable
    flat = dict(traversals.flatten_mapping(frozen))
    for path, value in traversals.flatten_mapping(trainable).items():
        if path in flat:
            raise ValueError(f"parameter {'/'.join(map(str, path))} is both trainable and "
                             "frozen")
        flat[path] = value
    return traversals.unflatten_mapping(flat)
