"""Building a model from its configuration, optionally with given parameters."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flantune.models.config import DecoderConfig, ModelConfig, T5Config
from flantune.models.decoder import DecoderOnly
from flantune.models.t5 import EncoderDecoder

Params = dict[str, Any]


class ParamsMismatchError(ValueError):
    """Given parameters do not match the model built from a configuration."""


def _model_class(config: ModelConfig) -> type[nnx.Module]:
    if isinstance(config, T5Config):
        return EncoderDecoder
    if isinstance(config, DecoderConfig):
        return DecoderOnly
    raise TypeError(f"unknown model configuration type {type(config).__name__}; "
                    "expected T5Config or DecoderConfig")


def build_model(config: ModelConfig, rngs: nnx.Rngs | None = None, *,
                params: Params | None = None) -> nnx.Module:
    """The model for `config`: randomly initialised from `rngs` (default seed 0) or, when
    `params` (nested dict as from `model_params`) is given, holding exactly those values.
    With `params` no random initialisation runs; every leaf is checked for presence and shape."""
    cls = _model_class(config)
    if params is None:
        return cls(config, rngs=rngs if rngs is not None else nnx.Rngs(0))
    model = nnx.eval_shape(lambda: cls(config, rngs=nnx.Rngs(0)))
    state = nnx.state(model, nnx.Param)
    expected = _flatten(state.to_pure_dict())
    given = _flatten(params)
    problems = [f"missing parameter {k} {v.shape}" for k, v in expected.items() if k not in given]
    problems += [f"unexpected parameter {k}" for k in given if k not in expected]
    problems += [f"parameter {k}: expected shape {expected[k].shape}, found {np.shape(given[k])}"
                 for k in expected if k in given and tuple(np.shape(given[k])) != expected[k].shape]
    if problems:
        raise ParamsMismatchError(f"parameters do not fit {cls.__name__}: " + "; ".join(problems))
    dtype = jnp.dtype(config.param_dtype)
    nnx.replace_by_pure_dict(state, jax.tree.map(lambda a: jnp.asarray(a, dtype), params))
    nnx.update(model, state)
    return model


def model_params(model: nnx.Module) -> Params:
    """The model's parameters as a nested dict of arrays (the layout conversion reads/writes)."""
    return nnx.state(model, nnx.Param).to_pure_dict()


def _flatten(tree: Params, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(_flatten(value, path))
        else:
            flat[path] = value
    return flat
