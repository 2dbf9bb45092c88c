"""Layers shared by the encoder-decoder and decoder-only families, written once.

Every parameter carries logical axis names (`vocab`, `embed`, `mlp`, `heads`, `kv`, ...) as
`out_sharding` metadata without eager sharding; the trainer maps them to mesh axes with rules.
Activations are constrained by logical name only. Parameters live in `param_dtype`; arithmetic
runs in `dtype`, with normalisation statistics and softmax always in float32.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from flantune.models.attention import Bias, dot_product_attention
from flantune.models.dropout import dropout

HEAD_MAJOR_AXES = ("batch", "heads", "length", "kv")

Rotary = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]
# Head-major keys and values [b, kv_heads, slots, kv] of one attention layer.
KeyValue = tuple[jax.Array, jax.Array]

ACTIVATION_FNS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "silu": jax.nn.silu,
}


def matmul_last(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """`x` [..., in] @ `kernel` [in, out] as one 2-D GEMM over the flattened leading axes.

    XLA:CPU runs the backward of a 2-D GEMM as two GEMMs reading their operands in place; for
    the same product written as an einsum over [b, length, in] it materializes transposed
    copies (~1.4x slower for a T5 MLP's forward and backward). GPUs and TPUs are indifferent.
    """
    lead = x.shape[:-1]
    out = jnp.dot(x.reshape(-1, x.shape[-1]), kernel)
    return out.reshape(*lead, kernel.shape[-1])


Matmul = Callable[[jax.Array, jax.Array], jax.Array]


def project_heads(x: jax.Array, kernel: jax.Array, matmul: Matmul = matmul_last) -> jax.Array:
    """`x` [b, length, embed] times `kernel` [embed, heads, kv]: head-major [b, heads, length, kv].

    One 2-D GEMM and an explicit transpose: written as one einsum, XLA:CPU materializes
    transposed operands for the backward GEMMs instead. `matmul(x, kernel [embed, heads * kv])`
    computes the product (an adapter's, see `adapted_matmul`).
    """
    _, heads, head_dim = kernel.shape
    out = matmul(x, kernel.reshape(kernel.shape[0], heads * head_dim))
    return out.reshape(*x.shape[:2], heads, head_dim).transpose(0, 2, 1, 3)


# Adapters (flantune.peft) attach a module to the module owning a projection kernel, under the
# kernel's attribute name plus this suffix (`query_lora`, `kernel_lora`); the module's
# `product(x, kernel, dropout_key)` computes the adapted projection of the flattened input
# [..., in] by the kernel [in, out]. Models without adapters never see one.
ADAPTER_SUFFIX = "_lora"
# Prefix tuning (flantune.peft) attaches a module to the model under this name; called with no
# arguments it returns the keys and values [layers, kv_heads, n, head_dim] of the self-attention
# of every layer of the stack it adapts (the decoder's), which every query attends to first.
PREFIX_ATTRIBUTE = "prefix_tuning"
# The same for T5's encoder self-attention (an extension of peft's prefix tuning).
ENCODER_PREFIX_ATTRIBUTE = "prefix_tuning_encoder"


# Prompt tuning (flantune.peft) attaches a module under this name; called with no arguments
# it returns the soft prompt [n, embed] placed before the inputs.
PROMPT_ATTRIBUTE = "prompt_tuning"


def soft_prompt(model: nnx.Module) -> jax.Array | None:
    """The soft prompt [n, embed] an attached prompt-tuning module gives, or None."""
    module = getattr(model, PROMPT_ATTRIBUTE, None)
    return None if module is None else module()


def soft_prompt_length(model: nnx.Module) -> int:
    """How many soft-prompt slots an attached prompt-tuning module adds (0 without one)."""
    module = getattr(model, PROMPT_ATTRIBUTE, None)
    return 0 if module is None else int(module.embedding.get_value().shape[0])


def prefix_key_values(model: nnx.Module, attribute: str = PREFIX_ATTRIBUTE) -> KeyValue | None:
    """The prefix keys and values an attached prefix-tuning module gives, or None."""
    module = getattr(model, attribute, None)
    return None if module is None else module()


def add_prefix_to_cache(layers: Any, prefix: KeyValue, batch_size: int) -> Any:
    """A decoding cache's per-layer entries (a tuple of dicts, or one dict stacked on a leading
    layers axis) with each layer's prefix keys and values, broadcast to the batch (beam search
    reorders rows)."""
    keys, values = (jnp.broadcast_to(a[:, None], (a.shape[0], batch_size, *a.shape[1:]))
                    for a in prefix)
    if isinstance(layers, tuple):
        return tuple({**layer, "prefix_key": keys[i], "prefix_value": values[i]}
                     for i, layer in enumerate(layers))
    return {**layers, "prefix_key": keys, "prefix_value": values}


def cached_prefix(cache: dict[str, jax.Array]) -> KeyValue | None:
    """A layer cache's prefix keys and values, if it has them."""
    if "prefix_key" not in cache:
        return None
    return cache["prefix_key"], cache["prefix_value"]


def adapted_matmul(owner: nnx.Module, param: str, dropout_key: jax.Array | None,
                   salt: int) -> Matmul:
    """`matmul(x, kernel)` for the kernel `owner.<param>`: `matmul_last`, or the product of
    the adapter attached to it. The adapter's dropout key is `dropout_key` folded with `salt`,
    so the model's own dropout masks do not change when an adapter is attached."""
    adapter = getattr(owner, param + ADAPTER_SUFFIX, None)
    if adapter is None:
        return matmul_last
    key = None if dropout_key is None else jax.random.fold_in(dropout_key, salt)
    return lambda x, kernel: adapter.product(x, kernel, key)


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
    """Constrains an activation's sharding by logical axis names (a no-op without rules/mesh)."""
    return nn.with_logical_constraint(x, tuple(axes))


def logical_param(
    rngs: nnx.Rngs,
    init: Callable[..., jax.Array],
    shape: Sequence[int],
    axes: Sequence[str | None],
    param_dtype: jnp.dtype,
) -> nnx.Param:
    """Creates a parameter annotated with logical axis names (never mesh axes)."""
    if len(shape) != len(axes):
        raise ValueError(
            f"parameter shape {tuple(shape)} and logical axes {tuple(axes)} differ in rank")
    value = init(rngs.params(), tuple(shape), param_dtype)
    return nnx.Param(value, out_sharding=tuple(axes), eager_sharding=False)


class RMSNorm(nnx.Module):
    """Root-mean-square norm with a learned scale and no bias or mean subtraction (T5, Llama)."""

    def __init__(self, dim: int, *, epsilon: float, dtype: jnp.dtype, param_dtype: jnp.dtype,
                 rngs: nnx.Rngs):
        self.scale = logical_param(rngs, nnx.initializers.ones, (dim,), ("embed",), param_dtype)
        self.epsilon = epsilon
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        variance = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
        normed = (x32 * jax.lax.rsqrt(variance + self.epsilon)).astype(self.dtype)
        return self.scale.get_value().astype(self.dtype) * normed


class Embed(nnx.Module):
    """Token embedding table [vocab, embed]; `attend` reuses it as a tied output projection."""

    def __init__(self, num_embeddings: int, dim: int, *, dtype: jnp.dtype, param_dtype: jnp.dtype,
                 init_stddev: float, rngs: nnx.Rngs):
        init = nnx.initializers.normal(stddev=init_stddev)
        self.embedding = logical_param(rngs, init, (num_embeddings, dim), ("vocab", "embed"),
                                       param_dtype)
        self.dtype = dtype

    def __call__(self, ids: jax.Array) -> jax.Array:
        table = self.embedding.get_value().astype(self.dtype)
        return jnp.take(table, ids, axis=0)

    def attend(self, x: jax.Array) -> jax.Array:
        table = self.embedding.get_value().astype(self.dtype)
        return jnp.einsum("ble,ve->blv", x, table)


class Dense(nnx.Module):
    """A bias-free projection with kernel [in, out]."""

    def __init__(self, in_dim: int, out_dim: int, axes: tuple[str, str], *, dtype: jnp.dtype,
                 param_dtype: jnp.dtype, rngs: nnx.Rngs):
        init = nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
        self.kernel = logical_param(rngs, init, (in_dim, out_dim), axes, param_dtype)
        self.dtype = dtype

    def __call__(self, x: jax.Array, dropout_key: jax.Array | None = None) -> jax.Array:
        """`x` [..., in] -> [..., out]; `dropout_key` only reaches an attached adapter."""
        kernel = self.kernel.get_value().astype(self.dtype)
        return adapted_matmul(self, "kernel", dropout_key, 0)(x, kernel)


class Mlp(nnx.Module):
    """Feed-forward block: gated (`act(x wi_0) * (x wi_1)`, e.g. gated-GELU, SwiGLU) or plain
    (`act(x wi)`), followed by `wo`."""

    def __init__(self, emb_dim: int, mlp_dim: int, *, activation: str, gated: bool,
                 dropout_rate: float, dtype: jnp.dtype, param_dtype: jnp.dtype, rngs: nnx.Rngs):
        def dense(i: int, o: int, axes: tuple[str, str]) -> Dense:
            return Dense(i, o, axes, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

        self.gated = gated
        if gated:
            self.wi_0 = dense(emb_dim, mlp_dim, ("embed", "mlp"))
            self.wi_1 = dense(emb_dim, mlp_dim, ("embed", "mlp"))
        else:
            self.wi = dense(emb_dim, mlp_dim, ("embed", "mlp"))
        self.wo = dense(mlp_dim, emb_dim, ("mlp", "embed"))
        self.activation = activation
        self.dropout_rate = dropout_rate

    def __call__(self, x: jax.Array, dropout_key: jax.Array | None = None) -> jax.Array:
        act = ACTIVATION_FNS[self.activation]
        adapter_keys = [None if dropout_key is None else jax.random.fold_in(dropout_key, salt)
                        for salt in (1, 2, 3)]
        if self.gated:
            hidden = act(self.wi_0(x, adapter_keys[0])) * self.wi_1(x, adapter_keys[1])
        else:
            hidden = act(self.wi(x, adapter_keys[0]))
        hidden = constrain(hidden, ("batch", "length", "mlp"))
        hidden = dropout(hidden, self.dropout_rate, dropout_key)
        return self.wo(hidden, adapter_keys[2])


def write_slots(cache: jax.Array, new: jax.Array, index: jax.Array) -> jax.Array:
    """Writes head-major `new` [b, h, q, d] into `cache` [b, h, slots, d] at slots
    index..index+q-1 (`index` a traced scalar)."""
    zero = jnp.zeros((), jnp.int32)
    start = (zero, zero, jnp.asarray(index, jnp.int32), zero)
    cache = jax.lax.dynamic_update_slice(cache, new.astype(cache.dtype), start)
    return constrain(cache, HEAD_MAJOR_AXES)


def with_prefix(key_value: KeyValue, prefix: KeyValue | None) -> KeyValue:
    """Keys and values [b, kv_heads, k, kv] with `prefix` [b or 1, kv_heads, n, kv] in front."""
    if prefix is None:
        return key_value
    out = []
    for part, pre in zip(key_value, prefix, strict=True):
        pre = jnp.broadcast_to(pre.astype(part.dtype), (part.shape[0], *pre.shape[1:]))
        out.append(constrain(jnp.concatenate([pre, part], axis=2), HEAD_MAJOR_AXES))
    return out[0], out[1]


class Attention(nnx.Module):
    """Multi-head / grouped-query attention with kernels [embed, heads, kv] and [heads, kv, embed].

    Split into `project_query`, `project_key_value`, `dot_product_attention` and `project_out` so
    a key/value cache can slot in between the projections and the core.
    """

    def __init__(self, emb_dim: int, num_heads: int, num_kv_heads: int, head_dim: int, *,
                 scale_logits: bool, dropout_rate: float, dtype: jnp.dtype,
                 param_dtype: jnp.dtype, rngs: nnx.Rngs, kernel: str = "auto"):
        init = nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal",
                                                 in_axis=0, out_axis=(1, 2))
        out_init = nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal",
                                                     in_axis=(0, 1), out_axis=2)
        self.query = logical_param(rngs, init, (emb_dim, num_heads, head_dim),
                                   ("embed", "heads", "kv"), param_dtype)
        self.key = logical_param(rngs, init, (emb_dim, num_kv_heads, head_dim),
                                 ("embed", "heads", "kv"), param_dtype)
        self.value = logical_param(rngs, init, (emb_dim, num_kv_heads, head_dim),
                                   ("embed", "heads", "kv"), param_dtype)
        self.out = logical_param(rngs, out_init, (num_heads, head_dim, emb_dim),
                                 ("heads", "kv", "embed"), param_dtype)
        self.scale = head_dim ** -0.5 if scale_logits else 1.0
        self.dropout_rate = dropout_rate
        self.dtype = dtype
        self.attention_kernel = kernel

    def _kernel(self, param: nnx.Param) -> jax.Array:
        return param.get_value().astype(self.dtype)

    def project_query(self, x: jax.Array, dropout_key: jax.Array | None = None) -> jax.Array:
        """[b, length, embed] -> head-major queries [b, heads, length, kv]."""
        matmul = adapted_matmul(self, "query", dropout_key, 1)
        return constrain(project_heads(x, self._kernel(self.query), matmul), HEAD_MAJOR_AXES)

    def project_key_value(self, x: jax.Array, dropout_key: jax.Array | None = None
                          ) -> tuple[jax.Array, jax.Array]:
        """[b, length, embed] -> head-major keys and values [b, kv_heads, length, kv]."""
        k = project_heads(x, self._kernel(self.key), adapted_matmul(self, "key", dropout_key, 2))
        v = project_heads(x, self._kernel(self.value),
                          adapted_matmul(self, "value", dropout_key, 3))
        return constrain(k, HEAD_MAJOR_AXES), constrain(v, HEAD_MAJOR_AXES)

    def project_out(self, x: jax.Array, dropout_key: jax.Array | None = None) -> jax.Array:
        """Head-major [b, heads, length, kv] -> [b, length, embed]."""
        b, heads, length, head_dim = x.shape
        x = x.transpose(0, 2, 1, 3).reshape(b, length, heads * head_dim)
        kernel = self._kernel(self.out)
        matmul = adapted_matmul(self, "out", dropout_key, 4)
        return matmul(x, kernel.reshape(heads * head_dim, kernel.shape[-1]))

    def attend_cached(self, inputs: jax.Array, cache: KeyValue, index: jax.Array,
                      bias: Bias, *, rotary: Rotary | None = None,
                      prefix: KeyValue | None = None) -> tuple[jax.Array, KeyValue]:
        """Self-attention of `inputs` [b, q, embed] at cache slots index..index+q-1.

        Their keys and values are written into `cache` (head-major [b, kv_heads, slots, kv])
        first; the queries then attend to every slot, `bias` [b or 1, 1 or heads, q, slots]
        masking the empty and disallowed ones. `prefix` keys and values (see `__call__`) come
        before the slots (the bias then covers prefix + slots). Returns the output and the
        updated cache.
        """
        q = self.project_query(inputs)
        k, v = self.project_key_value(inputs)
        if rotary is not None:
            q, k = rotary(q, k)
        cache = (write_slots(cache[0], k, index), write_slots(cache[1], v, index))
        out = dot_product_attention(q, *with_prefix(cache, prefix), bias, scale=self.scale,
                                    kernel=self.attention_kernel)
        return self.project_out(out), cache

    def attend_precomputed(self, inputs_q: jax.Array, key_value: KeyValue,
                           bias: Bias) -> jax.Array:
        """Attention of `inputs_q` to keys and values projected beforehand (e.g. cross-attention
        to an encoder output while decoding)."""
        q = self.project_query(inputs_q)
        out = dot_product_attention(q, *key_value, bias, scale=self.scale,
                                    kernel=self.attention_kernel)
        return self.project_out(out)

    def __call__(self, inputs_q: jax.Array, inputs_kv: jax.Array, bias: Bias, *,
                 rotary: Rotary | None = None, dropout_key: jax.Array | None = None,
                 prefix: KeyValue | None = None) -> jax.Array:
        """Attention of `inputs_q` to `inputs_kv`. `prefix` keys and values [b or 1, kv_heads,
        n, kv] (prefix tuning; not rotated) come before the projected ones, and `bias` then
        covers n + length keys."""
        q = self.project_query(inputs_q, dropout_key)
        k, v = self.project_key_value(inputs_kv, dropout_key)
        if rotary is not None:
            q, k = rotary(q, k)
        k, v = with_prefix((k, v), prefix)
        out = dot_product_attention(q, k, v, bias, scale=self.scale,
                                    dropout_rate=self.dropout_rate, dropout_key=dropout_key,
                                    kernel=self.attention_kernel)
        return self.project_out(out, dropout_key)


class LayerStack(nnx.Module):
    """`num_layers` identical layers, either a Python list or, with `scan=True`, one module with
    parameters stacked on a leading `layers` axis applied by `nnx.scan` (constant compile time).
    With `remat=True` each layer's activations are recomputed in the backward pass.

    A layer is called as `layer(x, *args, dropout_key=key)` and returns the new `x`; given
    `per_layer` (a pytree with a leading axis of `num_layers`), layer i also gets its slice as
    `prefix=` (an adapter's per-layer keys and values).
    """

    def __init__(self, make_layer: Callable[[nnx.Rngs], nnx.Module], num_layers: int, *,
                 scan: bool, remat: bool, rngs: nnx.Rngs):
        self.num_layers = num_layers
        self.scan = scan
        self.remat = remat
        if scan:
            @nnx.split_rngs(splits=num_layers)
            @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
            def create(layer_rngs: nnx.Rngs) -> nnx.Module:
                return make_layer(layer_rngs)

            self.layers = create(rngs)
        else:
            self.layers = nnx.List([make_layer(rngs) for _ in range(num_layers)])

    def __call__(self, x: jax.Array, *args: jax.Array, dropout_key: jax.Array | None = None,
                 per_layer: Any = None) -> jax.Array:
        def apply(layer: nnx.Module, h: jax.Array, key: jax.Array | None, mine: Any,
                  *layer_args: jax.Array) -> jax.Array:
            if mine is None:
                return layer(h, *layer_args, dropout_key=key)
            return layer(h, *layer_args, dropout_key=key, prefix=mine)

        if self.remat:
            apply = nnx.remat(apply)
        keys = None if dropout_key is None else jax.random.split(dropout_key, self.num_layers)
        if not self.scan:
            for i, layer in enumerate(self.layers):
                mine = None if per_layer is None else jax.tree.map(lambda a, i=i: a[i],
                                                                    per_layer)
                x = apply(layer, x, None if keys is None else keys[i], mine, *args)
            return x

        key_axis = None if keys is None else 0
        mine_axis = None if per_layer is None else 0

        @nnx.scan(in_axes=(nnx.Carry, 0, key_axis, mine_axis) + (None,) * len(args),
                  out_axes=nnx.Carry, transform_metadata={nnx.PARTITION_NAME: "layers"})
        def step(h: jax.Array, layer: nnx.Module, key: jax.Array | None, mine: Any,
                 *layer_args: jax.Array) -> jax.Array:
            return apply(layer, h, key, mine, *layer_args)

        return step(x, self.layers, keys, per_layer, *args)

    def map_layers(self, fn: Callable[..., Any], *args: jax.Array) -> Any:
        """`fn(layer, *args)` for every layer: a tuple of results, or with `scan=True` the results
        stacked on a leading `layers` axis (the layout `apply_cached` expects)."""
        if not self.scan:
            return tuple(fn(layer, *args) for layer in self.layers)

        @nnx.vmap(in_axes=(0,) + (None,) * len(args), out_axes=0,
                  transform_metadata={nnx.PARTITION_NAME: "layers"})
        def each(layer: nnx.Module, *layer_args: jax.Array) -> Any:
            return fn(layer, *layer_args)

        return each(self.layers, *args)

    def apply_cached(self, x: jax.Array, cache: Any, *args: jax.Array) -> tuple[jax.Array, Any]:
        """Incremental decoding: `layer.decode_step(x, layer_cache, *args)` returns the new `x`
        and that layer's new cache. `cache` is laid out as `map_layers` returns it."""
        if not self.scan:
            new_cache = []
            for layer, layer_cache in zip(self.layers, cache, strict=True):
                x, layer_cache = layer.decode_step(x, layer_cache, *args)
                new_cache.append(layer_cache)
            return x, tuple(new_cache)

        @nnx.scan(in_axes=(nnx.Carry, 0, 0) + (None,) * len(args), out_axes=(nnx.Carry, 0),
                  transform_metadata={nnx.PARTITION_NAME: "layers"})
        def step(h: jax.Array, layer: nnx.Module, layer_cache: Any,
                 *layer_args: jax.Array) -> tuple[jax.Array, Any]:
            return layer.decode_step(h, layer_cache, *layer_args)

        return step(x, self.layers, cache, *args)
