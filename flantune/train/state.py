"""The train state: parameters, optimizer state, step and RNG as one sharded pytree.

Parameters are kept as the plain nested dict of ``model_params`` (the layout checkpoints and
Hugging Face conversion use); :class:`ModelSpec` turns them back into an NNX model inside jit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import flantune.partitioning as partitioning
from flantune.models import DecoderConfig, T5Config, build_model

PyTree = Any
ModelConfig = T5Config | DecoderConfig


@dataclasses.dataclass
class ModelSpec:
    """A model's structure without its weights: rebuild the module from a params dict."""

    config: ModelConfig
    graphdef: nnx.GraphDef
    abstract_state: nnx.State  # nnx.Param variables (shapes and logical axes), no values

    @classmethod
    def from_config(cls, config: ModelConfig) -> ModelSpec:
        model = nnx.eval_shape(lambda: build_model(config, nnx.Rngs(0)))
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        if jax.tree.leaves(rest):
            raise ValueError("flantune models keep all their state in nnx.Param variables; "
                             f"{type(model).__name__} has other state: {rest}")
        return cls(config=config, graphdef=graphdef, abstract_state=params)

    @property
    def family(self) -> str:
        """The feature converter the model consumes: ``"enc_dec"`` or ``"decoder"``."""
        return "enc_dec" if isinstance(self.config, T5Config) else "decoder"

    def abstract_params(self) -> PyTree:
        return jax.tree.map(lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype),
                            self.abstract_state.to_pure_dict())

    def merge(self, params: PyTree) -> nnx.Module:
        """The module holding ``params`` (works on tracers inside jit)."""
        treedef = jax.tree.structure(self.abstract_state)
        leaves = jax.tree.leaves(params)
        if len(leaves) != treedef.num_leaves:
            raise ValueError(f"params have {len(leaves)} arrays; the model needs "
                             f"{treedef.num_leaves}.")
        return nnx.merge(self.graphdef, jax.tree.unflatten(treedef, leaves))

    def init_params(self, rng: jax.Array) -> PyTree:
        model = build_model(self.config, nnx.Rngs(params=rng))
        return nnx.state(model, nnx.Param).to_pure_dict()


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def state_shardings(spec: ModelSpec, optimizer: optax.GradientTransformation, mesh: Mesh,
                    rules: partitioning.LogicalAxisRules) -> PyTree:
    """NamedShardings for every leaf of the train state."""
    params = partitioning.param_shardings(spec.abstract_state, mesh, rules)
    opt_shapes = jax.eval_shape(optimizer.init, spec.abstract_params())
    return {
        "params": params,
        "opt_state": partitioning.opt_state_shardings(opt_shapes, params, mesh,
                                                      param_shapes=spec.abstract_params()),
        "step": replicated(mesh),
        "rng": replicated(mesh),
    }


def abstract_state(spec: ModelSpec, optimizer: optax.GradientTransformation,
                   shardings: PyTree, seed: int = 0) -> PyTree:
    """ShapeDtypeStructs (with shardings) of the train state, e.g. for restoring a checkpoint."""
    shapes = jax.eval_shape(lambda: _fresh_state(spec, optimizer, seed))
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                        shapes, shardings)


def _fresh_state(spec: ModelSpec, optimizer: optax.GradientTransformation, seed: int,
                 params: PyTree | None = None) -> PyTree:
    # Raw uint32 keys (not typed keys): they checkpoint as plain arrays.
    init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
    if params is None:
        params = spec.init_params(init_key)
    return {"params": params, "opt_state": optimizer.init(params),
            "step": jnp.zeros((), jnp.int32), "rng": train_key}


def init_state(spec: ModelSpec, optimizer: optax.GradientTransformation, shardings: PyTree,
               *, seed: int = 0, params: PyTree | None = None) -> PyTree:
    """A fresh train state, created directly in its shardings (random or given params)."""
    if params is None:
        make: Callable[[], PyTree] = lambda: _fresh_state(spec, optimizer, seed)  # noqa: E731
        return jax.jit(make, out_shardings=shardings)()
    return jax.jit(lambda p: _fresh_state(spec, optimizer, seed, p),
                   in_shardings=(shardings["params"],), out_shardings=shardings)(params)
