"""Optimizers and learning-rate schedules, built from optax.

Adafactor with factored second moments and no momentum is the T5 / FLAN fine-tuning default;
AdamW is what decoder-only fine-tuning (MaxText, TRL) usually runs.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import optax

SCHEDULES = ("constant", "linear_warmup", "rsqrt", "cosine")
OPTIMIZERS = ("adafactor", "adamw")


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """``rsqrt`` is t5x's ``rsqrt_decay``: base * 1/sqrt(max(step, warmup_steps)) (with
    base 1.0 and 10,000 warmup steps that is 0.01, then decaying); the other kinds warm up
    linearly from 0 over ``warmup_steps`` and then stay constant or follow a cosine to
    ``final_fraction * base`` at ``total_steps``."""

    kind: str = "constant"
    base_learning_rate: float = 1e-3
    warmup_steps: int = 0
    total_steps: int | None = None
    final_fraction: float = 0.0

    def __post_init__(self):
        if self.kind not in SCHEDULES:
            raise ValueError(f"Unknown schedule '{self.kind}'; choose one of {SCHEDULES}.")
        if self.kind == "cosine" and not self.total_steps:
            raise ValueError("The cosine schedule needs total_steps (usually TRAIN_STEPS).")
        if self.kind == "rsqrt" and self.warmup_steps <= 0:
            raise ValueError("The rsqrt schedule needs warmup_steps > 0 (t5x uses 10,000).")


def make_schedule(config: ScheduleConfig) -> optax.Schedule:
    base, warmup = config.base_learning_rate, config.warmup_steps
    if config.kind == "rsqrt":
        return lambda step: base * jnp.reciprocal(jnp.sqrt(jnp.maximum(step, warmup)))
    if config.kind == "cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0, peak_value=base, warmup_steps=warmup,
            decay_steps=config.total_steps, end_value=base * config.final_fraction)
    if warmup <= 0:
        return optax.constant_schedule(base)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, base, warmup), optax.constant_schedule(base)], [warmup])


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    name: str = "adafactor"
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    max_grad_norm: float | None = None  # clip by global norm before the update
    weight_decay: float = 0.0
    # Adafactor (T5 defaults).
    decay_rate: float = 0.8
    clipping_threshold: float | None = 1.0
    multiply_by_parameter_scale: bool = True
    min_dim_size_to_factor: int = 128
    # AdamW.
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self):
        if self.name not in OPTIMIZERS:
            raise ValueError(f"Unknown optimizer '{self.name}'; choose one of {OPTIMIZERS}.")


def make_optimizer(config: OptimizerConfig) -> tuple[optax.GradientTransformation,
                                                      optax.Schedule]:
    """The optax transformation for ``config`` and its learning-rate schedule."""
    schedule = make_schedule(config.schedule)
    if config.name == "adafactor":
        core = optax.adafactor(
            learning_rate=schedule, min_dim_size_to_factor=config.min_dim_size_to_factor,
            decay_rate=config.decay_rate, clipping_threshold=config.clipping_threshold,
            multiply_by_parameter_scale=config.multiply_by_parameter_scale, momentum=None,
            weight_decay_rate=config.weight_decay or None, factored=True)
    else:
        core = optax.adamw(learning_rate=schedule, b1=config.b1, b2=config.b2, eps=config.eps,
                           weight_decay=config.weight_decay)
    if config.max_grad_norm:
        core = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), core)
    return core, schedule
