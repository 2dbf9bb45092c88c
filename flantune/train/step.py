"""The train step: forward, loss, gradients (optionally over microbatches), optimizer update.

Gradients are accumulated as *unnormalized* sums over microbatches and divided once by the
full batch's normalizer, so k microbatches give exactly the full-batch update.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from flantune.train.losses import LossConfig, LossNormalization, loss_sums
from flantune.train.objective import StepObjective
from flantune.train.state import ModelSpec

PyTree = Any
Batch = Mapping[str, jax.Array]

MODEL_INPUTS = {
    "enc_dec": ("encoder_input_tokens", "decoder_input_tokens", "encoder_segment_ids",
                "decoder_segment_ids", "encoder_positions", "decoder_positions"),
    "decoder": ("decoder_input_tokens", "decoder_segment_ids", "decoder_positions",
                "decoder_causal_attention"),
}
LABEL_KEYS = ("decoder_target_tokens", "decoder_loss_weights", "decoder_task_ids")


@dataclasses.dataclass(frozen=True)
class StepConfig:
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    num_microbatches: int = 1
    num_tasks: int = 0  # > 0: per-task loss from ``decoder_task_ids``
    # A step whose loss or gradient norm is NaN/Inf leaves parameters and optimizer state as
    # they were (the step still counts and consumes its batch); metrics["nonfinite"] flags it.
    skip_nonfinite: bool = True


def model_inputs(batch: Batch, family: str) -> dict[str, jax.Array]:
    """The batch features the model's ``__call__`` takes (SeqIO key names)."""
    return {k: batch[k] for k in MODEL_INPUTS[family] if k in batch}


def _microbatches(batch: Batch, count: int) -> Batch:
    def split(x: jax.Array) -> jax.Array:
        if x.shape[0] % count:
            raise ValueError(f"Batch of {x.shape[0]} rows does not split into {count} "
                             "microbatches; make BATCH_SIZE a multiple of the microbatch count.")
        return x.reshape(count, x.shape[0] // count, *x.shape[1:])

    return {k: split(v) for k, v in batch.items()}


def _denominator(sums: Mapping[str, jax.Array]) -> jax.Array:
    """The loss normalizer of `sums`, kept away from zero (a batch without target tokens)."""
    return jnp.maximum(sums["denominator"], 1e-9)


def make_train_step(spec: ModelSpec, optimizer: optax.GradientTransformation,
                    schedule: optax.Schedule, config: StepConfig,
                    objective: StepObjective | None = None
                    ) -> Callable[[PyTree, Batch], tuple[PyTree, dict[str, jax.Array]]]:
    """``step(state, batch, frozen=None, reference=None) -> (state, metrics)``; jit it with the
    state's shardings. ``state["params"]`` are the trainable parameters; an adapted model's
    frozen base parameters come as ``frozen`` and get no gradients (they are constants of the
    loss). With an ``objective`` (flantune.train.objective) its loss replaces the token
    cross-entropy; ``reference`` is its extra argument (e.g. a reference model's parameters)."""
    family = spec.family
    dropout = uses_dropout(spec)

    def sums_and_grads(params: PyTree, frozen: PyTree, reference: PyTree, batch: Batch,
                       rng: jax.Array, normalize: bool):
        """Loss sums and gradients of the summed loss, or with `normalize` of the loss divided
        by this batch's denominator (one pass fewer over the gradients than dividing them)."""
        values = (None if objective is None
                  else jax.lax.stop_gradient(objective.reference_values(batch, reference, frozen)))

        def loss_fn(p: PyTree):
            model = spec.merge(spec.join(p, frozen))
            # The model config's dropout_rate applies in training, as in t5x (evaluation,
            # scoring and decoding call the model deterministically).
            logits = model(**model_inputs(batch, family), deterministic=not dropout,
                           dropout_rng=rng if dropout else None)
            if objective is not None:
                sums = objective.loss_sums(logits, batch, values)
            else:
                sums = loss_sums(logits, batch["decoder_target_tokens"],
                                 batch["decoder_loss_weights"], config.loss,
                                 segment_ids=batch.get("decoder_segment_ids"),
                                 task_ids=batch.get("decoder_task_ids"),
                                 num_tasks=config.num_tasks)
            total = sums["loss"]
            if normalize:
                total = total / _denominator(sums)
            return total, sums

        (_, sums), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        return sums, grads

    def step(state: PyTree, batch: Batch, frozen: PyTree | None = None,
             reference: PyTree | None = None) -> tuple[PyTree, dict[str, jax.Array]]:
        params = state["params"]
        rng, step_rng = jax.random.split(state["rng"])
        if config.num_microbatches == 1:
            sums, grads = sums_and_grads(params, frozen, reference, batch, step_rng,
                                         normalize=True)
            denominator = _denominator(sums)
        else:
            micro = _microbatches(batch, config.num_microbatches)
            keys = jax.random.split(step_rng, config.num_microbatches)
            zero_sums, zero_grads = jax.eval_shape(
                lambda *a: sums_and_grads(*a, normalize=False), params, frozen, reference,
                jax.tree.map(lambda x: x[0], micro), keys[0])
            zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (zero_sums, zero_grads))

            def accumulate(carry, xs):
                part, key = xs
                sums_i, grads_i = sums_and_grads(params, frozen, reference, part, key,
                                                 normalize=False)
                return jax.tree.map(jnp.add, carry, (sums_i, grads_i)), None

            (sums, grads), _ = jax.lax.scan(accumulate, zeros, (micro, keys))
            if objective is None and config.loss.normalization is LossNormalization.CONSTANT:
                sums["denominator"] = jnp.asarray(config.loss.constant, jnp.float32)
            denominator = _denominator(sums)
            grads = jax.tree.map(lambda g: g / denominator, grads)
        grad_norm = optax.global_norm(grads)
        finite = jnp.isfinite(sums["loss"]) & jnp.isfinite(grad_norm)

        def apply(params: PyTree, opt_state: PyTree, grads: PyTree) -> tuple[PyTree, PyTree]:
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state

        if config.skip_nonfinite:
            # A conditional rather than a select over every array: the update is computed only
            # when it is kept, and a kept update costs no extra pass over the state.
            new_params, opt_state = jax.lax.cond(
                finite, apply, lambda p, o, _: (p, o), params, state["opt_state"], grads)
        else:
            new_params, opt_state = apply(params, state["opt_state"], grads)
        common = {
            "learning_rate": schedule(state["step"]),
            "grad_norm": grad_norm,
            "nonfinite": jnp.logical_not(finite).astype(jnp.float32),
        }
        if objective is not None:
            metrics = {"loss": sums["loss"] / denominator, **objective.metrics(sums), **common}
        else:
            metrics = {
                "loss": sums["loss"] / denominator,
                "z_loss": sums["z_loss"] / denominator,
                "accuracy": sums["correct"] / jnp.maximum(sums["weight"], 1.0),
                "target_tokens": sums["weight"],
                **common,
            }
        if "task_loss" in sums:
            metrics["task_loss_sum"] = sums["task_loss"]
            metrics["task_tokens"] = sums["task_weight"]
        new_state = {"params": new_params, "opt_state": opt_state, "step": state["step"] + 1,
                     "rng": rng}
        return new_state, metrics

    return step


def uses_dropout(spec: ModelSpec) -> bool:
    """Whether training draws dropout masks: the model's dropout_rate or an adapter's."""
    adapter_rate = getattr(spec.adapter, "dropout", 0.0) if spec.adapter is not None else 0.0
    return spec.config.dropout_rate > 0.0 or adapter_rate > 0.0


def make_eval_loss(spec: ModelSpec, config: StepConfig
                   ) -> Callable[[PyTree, Batch], dict[str, jax.Array]]:
    """``eval_loss(params, batch) -> summed loss metrics`` (no update, deterministic; the
    full parameter tree)."""
    family = spec.family

    def eval_loss(params: PyTree, batch: Batch) -> dict[str, jax.Array]:
        logits = spec.merge(params)(**model_inputs(batch, family), deterministic=True)
        return loss_sums(logits, batch["decoder_target_tokens"], batch["decoder_loss_weights"],
                         config.loss, segment_ids=batch.get("decoder_segment_ids"),
                         task_ids=batch.get("decoder_task_ids"), num_tasks=config.num_tasks)

    return eval_loss
