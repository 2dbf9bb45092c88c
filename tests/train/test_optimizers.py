"""Optimizers and schedules."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flantune.train.optimizers import (
    OptimizerConfig,
    ScheduleConfig,
    make_optimizer,
    make_schedule,
)


def test_schedules_by_hand():
    constant = make_schedule(ScheduleConfig(base_learning_rate=0.5))
    assert float(constant(0)) == float(constant(10_000)) == 0.5
    warm = make_schedule(ScheduleConfig(kind="linear_warmup", base_learning_rate=1.0,
                                        warmup_steps=10))
    np.testing.assert_allclose([warm(0), warm(5), warm(10), warm(500)], [0.0, 0.5, 1.0, 1.0])
    rsqrt = make_schedule(ScheduleConfig(kind="rsqrt", base_learning_rate=1.0,
                                         warmup_steps=10_000))
    np.testing.assert_allclose([rsqrt(0), rsqrt(10_000), rsqrt(40_000)], [0.01, 0.01, 0.005],
                               rtol=1e-6)
    cosine = make_schedule(ScheduleConfig(kind="cosine", base_learning_rate=1.0,
                                          warmup_steps=10, total_steps=110, final_fraction=0.1))
    np.testing.assert_allclose([cosine(10), cosine(60), cosine(110)], [1.0, 0.55, 0.1],
                               rtol=1e-5)


def test_adafactor_factors_large_matrices_and_has_no_momentum():
    params = {"big": jnp.ones((256, 384)), "small": jnp.ones((8, 4)), "bias": jnp.ones((256,))}
    optimizer, _ = make_optimizer(OptimizerConfig())
    state = optimizer.init(params)
    shapes = sorted({tuple(x.shape) for x in jax.tree.leaves(state)})
    assert (256,) in shapes and (384,) in shapes  # factored row / column statistics
    assert (256, 384) not in shapes  # neither an unfactored second moment nor momentum


def test_adamw_with_clipping_equals_optax_chain():
    params = {"w": jnp.arange(6.0).reshape(2, 3)}
    grads = {"w": jnp.full((2, 3), 10.0)}
    config = OptimizerConfig(name="adamw", max_grad_norm=1.0, weight_decay=0.1,
                             schedule=ScheduleConfig(base_learning_rate=0.01))
    ours, _ = make_optimizer(config)
    reference = optax.chain(optax.clip_by_global_norm(1.0),
                            optax.adamw(0.01, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.1))
    a, _ = ours.update(grads, ours.init(params), params)
    b, _ = reference.update(grads, reference.init(params), params)
    np.testing.assert_allclose(a["w"], b["w"], rtol=1e-6)


def test_bad_configs():
    with pytest.raises(ValueError, match="Unknown optimizer"):
        OptimizerConfig(name="sgd")
    with pytest.raises(ValueError, match="Unknown schedule"):
        ScheduleConfig(kind="step")
    with pytest.raises(ValueError, match="cosine schedule needs total_steps"):
        ScheduleConfig(kind="cosine")
    with pytest.raises(ValueError, match="rsqrt schedule needs warmup_steps"):
        ScheduleConfig(kind="rsqrt")
