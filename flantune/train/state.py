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
from flantune.models import DecoderConfig, T5Config
from flantune.peft.adapted import adapter_paths, build_adapted_model, join_params, split_params
from flantune.peft.config import AdapterConfig

PyTree = Any
ModelConfig = T5Config | DecoderConfig


@dataclasses.dataclass
class ModelSpec:
    """A model's structure without its weights: rebuild the module from a params dict.

    With an adapter (flantune.peft) the model has the adapter attached; its parameters split
    into the trainable adapter (``trainable_paths``) and the frozen base, and the train state
    holds only the trainable part."""

    config: ModelConfig
    graphdef: nnx.GraphDef
    abstract_state: nnx.State  # nnx.Param variables (shapes and logical axes), no values
    adapter: AdapterConfig | None = None
    trainable_paths: frozenset | None = None  # None: every parameter trains

    @classmethod
    def from_config(cls, config: ModelConfig, adapter: AdapterConfig | None = None
                    ) -> ModelSpec:
        model = nnx.eval_shape(lambda: build_adapted_model(config, adapter, nnx.Rngs(0)))
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        if jax.tree.leaves(rest):
            raise ValueError("flantune models keep all their state in nnx.Param variables; "
                             f"{type(model).__name__} has other state: {rest}")
        trainable = adapter_paths(params) if adapter is not None else None
        return cls(config=config, graphdef=graphdef, abstract_state=params, adapter=adapter,
                   trainable_paths=trainable)

    @property
    def family(self) -> str:
        """The feature converter the model consumes: ``"enc_dec"`` or ``"decoder"``."""
        return "enc_dec" if isinstance(self.config, T5Config) else "decoder"

    def abstract_params(self) -> PyTree:
        """Shapes and dtypes of every parameter (base and adapter)."""
        return jax.tree.map(lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype),
                            self.abstract_state.to_pure_dict())

    def split(self, params: PyTree) -> tuple[PyTree, PyTree]:
        """(trainable, frozen) parts of a full parameter tree; without an adapter (params, {})."""
        if self.trainable_paths is None:
            return params, {}
        return split_params(params, self.trainable_paths)

    def join(self, trainable: PyTree, frozen: PyTree | None) -> PyTree:
        """The full parameter tree of the two parts (inverse of ``split``)."""
        return join_params(trainable, frozen)

    def abstract_trainable(self) -> PyTree:
        return self.split(self.abstract_params())[0]

    def abstract_frozen(self) -> PyTree:
        return self.split(self.abstract_params())[1]

    def merge(self, params: PyTree) -> nnx.Module:
        """The module holding ``params`` (works on tracers inside jit)."""
        treedef = jax.tree.structure(self.abstract_state)
        leaves = jax.tree.leaves(params)
        if len(leaves) != treedef.num_leaves:
            raise ValueError(f"params have {len(leaves)} arrays; the model needs "
                             f"{treedef.num_leaves}.")
        return nnx.merge(self.graphdef, jax.tree.unflatten(treedef, leaves))

    def abstract_model(self) -> nnx.Module:
        """The module with shapes for values (as from ``nnx.eval_shape``)."""
        return nnx.merge(self.graphdef, self.abstract_state)

    def init_params(self, rng: jax.Array) -> PyTree:
        """Every parameter, drawn from ``rng`` (the adapter's as peft draws them)."""
        model = build_adapted_model(self.config, self.adapter, nnx.Rngs(params=rng))
        return nnx.state(model, nnx.Param).to_pure_dict()

    def init_trainable(self, rng: jax.Array) -> PyTree:
        """The trainable part of ``init_params(rng)`` (under jit the rest is never computed)."""
        return self.split(self.init_params(rng))[0]


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def state_shardings(spec: ModelSpec, optimizer: optax.GradientTransformation, mesh: Mesh,
                    rules: partitioning.LogicalAxisRules) -> PyTree:
    """NamedShardings for every leaf of the train state (the trainable parameters only)."""
    params = spec.split(partitioning.param_shardings(spec.abstract_state, mesh, rules))[0]
    trainable = spec.abstract_trainable()
    opt_shapes = jax.eval_shape(optimizer.init, trainable)
    return {
        "params": params,
        "opt_state": partitioning.opt_state_shardings(opt_shapes, params, mesh,
                                                      param_shapes=trainable),
        "step": replicated(mesh),
        "rng": replicated(mesh),
    }


def frozen_shardings(spec: ModelSpec, mesh: Mesh, rules: partitioning.LogicalAxisRules
                     ) -> PyTree:
    """NamedShardings of the frozen base parameters of an adapted model ({} without one)."""
    return spec.split(partitioning.param_shardings(spec.abstract_state, mesh, rules))[1]


def placed(shapes: PyTree, shardings: PyTree) -> PyTree:
    """ShapeDtypeStructs of `shapes` (anything with shape and dtype) carrying `shardings`: the
    targets of a restore or a load."""
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                        shapes, shardings)


def abstract_state(spec: ModelSpec, optimizer: optax.GradientTransformation,
                   shardings: PyTree, seed: int = 0) -> PyTree:
    """ShapeDtypeStructs (with shardings) of the train state, e.g. for restoring a checkpoint."""
    return placed(jax.eval_shape(lambda: _fresh_state(spec, optimizer, seed)), shardings)


def state_keys(seed: int) -> tuple[jax.Array, jax.Array]:
    """(the key parameters are drawn from, the train state's first RNG) of a run's seed; raw
    uint32 keys (not typed keys): they checkpoint as plain arrays. An adapter run's random base
    is drawn from the same first key as a full run's parameters."""
    init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
    return init_key, train_key


def _fresh_state(spec: ModelSpec, optimizer: optax.GradientTransformation, seed: int,
                 params: PyTree | None = None) -> PyTree:
    init_key, train_key = state_keys(seed)
    if params is None:
        params = spec.init_trainable(init_key)
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
