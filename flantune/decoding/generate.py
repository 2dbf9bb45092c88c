"""`generate` and `make_generate_fn`: decoding as one jitted function, optionally sharded with the
training mesh and logical axis rules."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from flantune import partitioning
from flantune.decoding import model_steps
from flantune.decoding.beam_search import beam_decode
from flantune.decoding.config import DecodeConfig, Generated
from flantune.decoding.errors import DecodingError
from flantune.decoding.sampling_search import sample_decode
from flantune.models.build import build_model
from flantune.models.config import DecoderConfig, T5Config

Batch = Mapping[str, np.ndarray | jax.Array]
Params = dict[str, Any]
GenerateFn = Callable[..., Generated]


def decode(model: nnx.Module, inputs: jax.Array, config: DecodeConfig,
           key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Traceable decoding of `inputs` (the model's input feature): tokens and scores."""
    if config.method == "beam":
        return beam_decode(model, inputs, config)
    return sample_decode(model, inputs, config, key)


def _resolve_key(config: DecodeConfig, rng: jax.Array | None) -> jax.Array:
    if rng is not None:
        return rng
    if config.method == "sample" and config.temperature > 0:
        raise DecodingError("method='sample' needs rng (a jax.random key, e.g. "
                            "jax.random.key(0)); pass one to generate / the generate fn.")
    return jax.random.key(0)  # unused by greedy and beam search


def _to_host(array: jax.Array) -> np.ndarray:
    if jax.process_count() > 1:
        return np.asarray(multihost_utils.process_allgather(array, tiled=True))
    return np.asarray(array)


def _generated(tokens: jax.Array, scores: jax.Array) -> Generated:
    return Generated(tokens=_to_host(tokens).astype(np.int32),
                     scores=_to_host(scores).astype(np.float32))


def make_generate_fn(model_or_spec: nnx.Module | T5Config | DecoderConfig, config: DecodeConfig,
                     mesh: Mesh | None = None,
                     rules: partitioning.LogicalAxisRules | None = None) -> GenerateFn:
    """A callable `fn(batch, rng=None, *, params=None) -> Generated` compiled once per batch
    shape, so many batches decode without retracing.

    `model_or_spec` is a model (its parameters are used unless `params` is passed), an abstract
    model (`nnx.eval_shape`) or a model configuration; for the last two every call needs
    `params` (a nested dict as from `flantune.models.model_params`). With `mesh`, parameters are
    sharded by their logical axes under `rules` (default: `axis_rules()`), the batch is split
    over the mesh's batch axes (each process passes its own rows, as in training) and model
    activations are constrained by the same rules.
    """
    if isinstance(model_or_spec, T5Config | DecoderConfig):
        spec = model_or_spec
        model_or_spec = nnx.eval_shape(lambda: build_model(spec, nnx.Rngs(0)))
    model = model_or_spec
    if rules is not None and mesh is None:
        raise DecodingError("make_generate_fn got rules but no mesh; pass mesh= too.")
    if mesh is not None and rules is None:
        rules = partitioning.axis_rules()
    graphdef, param_state, rest = nnx.split(model, nnx.Param, ...)
    feature = model_steps.input_feature(model)
    has_values = all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(param_state))
    abstract_params = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), param_state)
    param_shardings = (partitioning.param_shardings(abstract_params, mesh, rules)
                       if mesh is not None else None)
    default_params = param_state.to_pure_dict() if has_values else None
    if default_params is not None and mesh is not None:
        default_params = jax.device_put(default_params, param_shardings)

    def run(params: Params, inputs: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        state = jax.tree.map(lambda x: x, abstract_params)
        nnx.replace_by_pure_dict(state, params)
        return decode(nnx.merge(graphdef, state, rest), inputs, config, key)

    compiled = jax.jit(run, in_shardings=(param_shardings, None, None)
                       if mesh is not None else None)

    def generate_fn(batch: Batch, rng: jax.Array | None = None, *,
                    params: Params | None = None) -> Generated:
        model_steps.check_batch(model, batch, config.pad_id)
        key = _resolve_key(config, rng)
        if params is None:
            if default_params is None:
                raise DecodingError("this generate fn was made from an abstract model or a "
                                    "configuration; pass params= (flantune.models.model_params).")
            params = default_params
        elif mesh is not None:
            params = jax.device_put(params, param_shardings)
        if mesh is None:
            tokens, scores = compiled(params, jnp.asarray(batch[feature], jnp.int32), key)
            return _generated(tokens, scores)
        inputs = partitioning.global_batch(
            {feature: np.asarray(batch[feature], np.int32)}, mesh)[feature]
        with partitioning.activation_rules(rules, mesh):
            tokens, scores = compiled(params, inputs, key)
        return _generated(tokens, scores)

    return generate_fn


@nnx.jit(static_argnames=("config",))
def _decode_jit(model: nnx.Module, inputs: jax.Array, config: DecodeConfig,
                key: jax.Array) -> tuple[jax.Array, jax.Array]:
    return decode(model, inputs, config, key)


def generate(model: nnx.Module, batch: Batch, config: DecodeConfig,
             rng: jax.Array | None = None) -> Generated:
    """Decodes `batch` (SeqIO features: `encoder_input_tokens` [b, L] 0-padded for T5,
    left-padded `decoder_input_tokens` [b, L] for decoder-only; see `left_pad_prompts`) on the
    default device. Compiled once per model structure, config and batch shape."""
    model_steps.check_batch(model, batch, config.pad_id)
    feature = model_steps.input_feature(model)
    key = _resolve_key(config, rng)
    tokens, scores = _decode_jit(model, jnp.asarray(batch[feature], jnp.int32), config, key)
    return _generated(tokens, scores)
