"""The train step on one device: microbatches, per-task loss, learning."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import tests.task_fixtures  # noqa: F401
from flantune.data import BatchIterator
from flantune.models import DecoderConfig, T5Config
from flantune.train.losses import LossConfig
from flantune.train.state import ModelSpec
from flantune.train.step import StepConfig, make_train_step

T5 = T5Config(vocab_size=8000, emb_dim=32, num_heads=2, head_dim=16, mlp_dim=64,
              num_encoder_layers=2, num_decoder_layers=2)
LLAMA = DecoderConfig(vocab_size=8000, emb_dim=32, num_heads=4, num_kv_heads=2, head_dim=8,
                      mlp_dim=64, num_layers=2)


def _setup(config, optimizer, **step_options):
    spec = ModelSpec.from_config(config)
    params = jax.jit(spec.init_params)(jax.random.PRNGKey(0))
    state = {"params": params, "opt_state": optimizer.init(params),
             "step": jnp.zeros((), jnp.int32), "rng": jax.random.PRNGKey(1)}
    data = BatchIterator("test_mix", task_feature_lengths={"inputs": 48, "targets": 16},
                         batch_size=8, window=128, converter=spec.family)
    step = jax.jit(make_train_step(spec, optimizer, optax.constant_schedule(0.1),
                                   StepConfig(num_tasks=len(data.task_names), **step_options)))
    return state, data, step


@pytest.mark.parametrize(("config", "normalization"), [
    (T5, "NUM_REAL_TARGET_TOKENS"), (T5, "AVERAGE_PER_SEQUENCE"),
    (LLAMA, "NUM_TOTAL_TARGET_TOKENS")], ids=["t5-real", "t5-per-sequence", "llama-total"])
def test_microbatches_give_the_full_batch_update(config, normalization):
    optimizer = optax.sgd(0.1)  # the update is exactly -0.1 x the gradient
    loss = LossConfig(normalization=normalization)
    state, data, full = _setup(config, optimizer, loss=loss)
    _, _, micro = _setup(config, optimizer, loss=loss, num_microbatches=4)
    batch = {k: jnp.asarray(v) for k, v in next(data).items()}
    a, metrics_a = full(state, batch)
    b, metrics_b = micro(state, batch)
    assert float(metrics_a["loss"]) == pytest.approx(float(metrics_b["loss"]), rel=1e-5)
    for x, y in zip(jax.tree.leaves(a["params"]), jax.tree.leaves(b["params"]), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(metrics_a["task_loss_sum"], metrics_b["task_loss_sum"],
                               rtol=1e-4)


def test_per_task_metrics_cover_the_batch():
    state, data, step = _setup(T5, optax.adamw(1e-3))
    batch = next(data)
    _, metrics = step(state, {k: jnp.asarray(v) for k, v in batch.items()})
    assert float(metrics["task_tokens"].sum()) == float(batch["decoder_loss_weights"].sum())
    assert float(metrics["target_tokens"]) == float(batch["decoder_loss_weights"].sum())
    # Token-weighted mean of per-task losses = mean loss without z-loss.
    mean = float(metrics["task_loss_sum"].sum() / metrics["task_tokens"].sum())
    assert mean == pytest.approx(float(metrics["loss"]), rel=1e-2)


@pytest.mark.parametrize("config", [T5, LLAMA], ids=["t5", "llama"])
def test_loss_falls_on_a_repeated_batch(config):
    state, data, step = _setup(config, optax.adamw(3e-3))
    batch = {k: jnp.asarray(v) for k, v in next(data).items()}
    losses = []
    for _ in range(25):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    assert losses[-1] < 0.5 * losses[0]
    assert int(state["step"]) == 25


@pytest.mark.parametrize("config", [T5, LLAMA], ids=["t5", "llama"])
def test_the_model_dropout_rate_applies_in_training_only(config):
    """t5x: a configured dropout rate trains with dropout; evaluation never uses it."""
    import dataclasses

    from flantune.train.step import make_eval_loss

    state, data, plain = _setup(config, optax.sgd(0.1))
    _, _, dropped = _setup(dataclasses.replace(config, dropout_rate=0.5), optax.sgd(0.1))
    batch = {k: jnp.asarray(v) for k, v in next(data).items()}
    _, metrics_plain = plain(state, batch)
    _, metrics_dropped = dropped(state, batch)
    assert float(metrics_dropped["loss"]) != pytest.approx(float(metrics_plain["loss"]),
                                                           rel=1e-3)
    # Two steps from the same state draw different masks (the state's RNG moves on).
    after, first = dropped(state, batch)
    _, second = dropped({**state, "rng": after["rng"]}, batch)
    assert float(first["loss"]) != float(second["loss"])
    eval_plain = make_eval_loss(ModelSpec.from_config(config), StepConfig())
    eval_dropped = make_eval_loss(
        ModelSpec.from_config(dataclasses.replace(config, dropout_rate=0.5)), StepConfig())
    a = jax.jit(eval_plain)(state["params"], batch)
    b = jax.jit(eval_dropped)(state["params"], batch)
    np.testing.assert_array_equal(np.asarray(a["loss"]), np.asarray(b["loss"]))


def test_dropout_rate_out_of_range_is_an_error():
    import dataclasses

    with pytest.raises(ValueError, match=r"dropout_rate=1\.0 must be in \[0, 1\)"):
        dataclasses.replace(T5, dropout_rate=1.0)
