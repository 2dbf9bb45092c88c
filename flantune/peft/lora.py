"""LoRA modules, attached to the modules that own the adapted kernels, and folding an adapter
into its base kernels (a merged checkpoint)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.custom_derivatives import SymbolicZero

from flantune.models.config import ModelConfig
from flantune.models.dropout import dropout
from flantune.models.layers import ADAPTER_SUFFIX, matmul_last
from flantune.peft.config import LoraConfig
from flantune.peft.targets import Projection, select

Params = dict[str, Any]


class AdapterParam(nnx.Param):
    """A trainable adapter parameter; every other parameter of an adapted model is frozen."""


class LoraDelta(nnx.Module):
    """`scale * dropout(x) @ A @ B` for a kernel of input dims `in_shape` and output dims
    `out_shape`: A [*in_shape, r], B [r, *out_shape] (layer axis first when stacked)."""

    def __init__(self, a: AdapterParam, b: AdapterParam, *, scale: float, dropout_rate: float,
                 dtype: jnp.dtype):
        self.lora_a = a
        self.lora_b = b
        self.scale = scale
        self.dropout_rate = dropout_rate
        self.dtype = dtype

    def _factors(self) -> tuple[jax.Array, jax.Array]:
        """A [in, r] and scale * B [r, out] in the compute dtype (the scale on B, not on the
        [tokens, out] product: one pass fewer over the activations)."""
        a = self.lora_a.get_value().astype(self.dtype)
        rank = a.shape[-1]
        b = (self.lora_b.get_value() * self.scale).astype(self.dtype).reshape(rank, -1)
        return a.reshape(-1, rank), b

    def __call__(self, x: jax.Array, dropout_key: jax.Array | None) -> jax.Array:
        """The delta alone: scale * dropout(x) @ A @ B."""
        a, b = self._factors()
        return matmul_last(matmul_last(dropout(x, self.dropout_rate, dropout_key), a), b)

    def product(self, x: jax.Array, kernel: jax.Array, dropout_key: jax.Array | None
                ) -> jax.Array:
        """x @ kernel + the delta. Without dropout in float32 as one product with the merged
        kernel (`fused_lora_matmul`); in lower precision the delta stays separate, as peft
        computes it (a merged bfloat16 kernel would round most of it away)."""
        if (self.dropout_rate and dropout_key is not None) or \
                jnp.dtype(self.dtype) != jnp.float32:
            return matmul_last(x, kernel) + self(x, dropout_key)
        a, b = self._factors()
        lead = x.shape[:-1]
        out = fused_lora_matmul(x.reshape(-1, x.shape[-1]), kernel, a, b)
        return out.reshape(*lead, kernel.shape[-1])


@jax.custom_jvp
def fused_lora_matmul(x: jax.Array, kernel: jax.Array, a: jax.Array, b: jax.Array
                      ) -> jax.Array:
    """x @ (kernel + a @ b) for x [n, in], kernel [in, out], a [in, r], b [r, out].

    Written by hand (a JVP rule with symbolic zeros) because autodiff of the merged product
    would form the [in, out] gradient of the merged kernel to reach a and b. Here a frozen
    kernel (a symbolic-zero tangent) gets no product at all, the input gradient is one GEMM with
    the merged kernel, and a and b get theirs through the rank-r factors; a kernel that does
    have a tangent gets its usual gradient.
    """
    return jnp.dot(x, kernel + jnp.dot(a, b))


def _fused_lora_jvp(primals, tangents):
    x, kernel, a, b = primals
    dx, dkernel, da, db = tangents
    merged = kernel + jnp.dot(a, b)
    out = jnp.dot(x, merged)
    terms = []
    if not isinstance(dx, SymbolicZero):
        terms.append(jnp.dot(dx, merged))
    if not isinstance(dkernel, SymbolicZero):
        terms.append(jnp.dot(x, dkernel))
    if not isinstance(da, SymbolicZero):
        terms.append(jnp.dot(jnp.dot(x, da), b))
    if not isinstance(db, SymbolicZero):
        terms.append(jnp.dot(jnp.dot(x, a), db))
    tangent = sum(terms[1:], terms[0]) if terms else jnp.zeros_like(out)
    return out, tangent


fused_lora_matmul.defjvp(_fused_lora_jvp, symbolic_zeros=True)


def _node(model: nnx.Module, path: tuple) -> Any:
    node = model
    for key in path:
        node = node[key] if isinstance(key, int) else getattr(node, key)
    return node


def kaiming_uniform_bound(in_features: int) -> float:
    """peft initialises A [r, in] with torch's kaiming_uniform_(a=sqrt(5)): U(-b, b) with
    b = gain * sqrt(3 / fan_in), gain = sqrt(2 / (1 + a^2)), i.e. b = 1 / sqrt(in)."""
    return 1.0 / math.sqrt(in_features)


def _groups(chosen: list[Projection]) -> dict[tuple, list[Projection]]:
    """Projections by (owner, param): one per kernel, or every layer of a stacked kernel."""
    out: dict[tuple, list[Projection]] = {}
    for p in chosen:
        out.setdefault((p.owner, p.param), []).append(p)
    return out


def attach_lora(model: nnx.Module, model_config: ModelConfig, config: LoraConfig,
                key: jax.Array) -> list[Projection]:
    """Attaches a LoraDelta to every projection `config.target_modules` selects (A random as
    peft's, B zero) and returns those projections. Works on an `nnx.eval_shape`d model too."""
    chosen = select(model_config, config.target_modules)
    param_dtype = jnp.dtype(model_config.param_dtype)
    dtype = jnp.dtype(model_config.dtype)
    order = {p: i for i, p in enumerate(chosen)}

    def draw_a(p: Projection) -> jax.Array:
        # One key per projection in file order: scanned and per-layer models draw alike.
        bound = kaiming_uniform_bound(p.in_features)
        return jax.random.uniform(jax.random.fold_in(key, order[p]), (*p.in_shape, config.r),
                                  param_dtype, -bound, bound)

    for (owner_path, param), group in _groups(chosen).items():
        owner = _node(model, owner_path)
        kernel = getattr(owner, param)
        axes = tuple(kernel.get_metadata()["out_sharding"])
        first = group[0]
        stacked = first.layer is not None
        lead = (len(group),) if stacked else ()
        lead_axes = axes[:1] if stacked else ()
        per_layer_axes = axes[1:] if stacked else axes
        in_axes = per_layer_axes[:len(first.in_shape)]
        out_axes = per_layer_axes[len(first.in_shape):]
        if stacked:
            a = jnp.stack([draw_a(p) for p in sorted(group, key=lambda p: p.layer)])
        else:
            a = draw_a(first)
        b = jnp.zeros((*lead, config.r, *first.out_shape), param_dtype)
        delta = LoraDelta(
            AdapterParam(a, out_sharding=(*lead_axes, *in_axes, None), eager_sharding=False),
            AdapterParam(b, out_sharding=(*lead_axes, None, *out_axes), eager_sharding=False),
            scale=config.scale, dropout_rate=config.dropout, dtype=dtype)
        setattr(owner, param + ADAPTER_SUFFIX, delta)
    return chosen


def lora_path(projection: Projection, which: str) -> tuple:
    """The parameter path of a projection's A ("lora_a") or B ("lora_b")."""
    return (*projection.owner, projection.param + ADAPTER_SUFFIX, which)


def _get(tree: Mapping, path: tuple) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _set(tree: dict, path: tuple, value: Any) -> None:
    for key in path[:-1]:
        tree = tree[key]
    tree[path[-1]] = value


def lora_matrices(adapter: Params, projection: Projection) -> tuple[np.ndarray, np.ndarray]:
    """A [in, r] and B [r, out] of one projection (one layer's slice when stacked)."""
    a = np.asarray(_get(adapter, lora_path(projection, "lora_a")))
    b = np.asarray(_get(adapter, lora_path(projection, "lora_b")))
    if projection.layer is not None:
        a, b = a[projection.layer], b[projection.layer]
    rank = a.shape[-1]
    return a.reshape(-1, rank), b.reshape(rank, -1)


def merge_lora(params: Params, adapter: Params, model_config: ModelConfig,
               config: LoraConfig) -> Params:
    """The base `params` with every adapted kernel replaced by W + scale * A @ B (computed in
    float32, stored in the kernel's dtype): a plain model that equals the adapted one."""
    merged = jax.tree.map(lambda x: x, params)  # a fresh tree of the same arrays
    for (owner, param), group in _groups(select(model_config, config.target_modules)).items():
        path = (*owner, param)
        kernel = np.array(_get(params, path), dtype=np.float32)
        for projection in group:
            a, b = lora_matrices(adapter, projection)
            delta = (config.scale * (a.astype(np.float32) @ b.astype(np.float32)))
            shape = (*projection.in_shape, *projection.out_shape)
            if projection.layer is None:
                kernel = kernel + delta.reshape(shape)
            else:
                kernel[projection.layer] += delta.reshape(shape)
        original = _get(params, path)
        _set(merged, path, jnp.asarray(kernel, dtype=original.dtype))
    return merged
