"""NaN/Inf loss or gradients: the update is skipped (counted and logged) and the run stops
after too many, keeping the last good checkpoint; without skipping it stops at the first."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flantune.partitioning as partitioning
import tests.task_fixtures  # noqa: F401
from flantune.train import loop
from flantune.train.checkpoints import CheckpointConfig
from flantune.train.loop import TrainError, train
from flantune.train.metric_writers import METRICS_JSONL, read_metrics
from flantune.train.optimizers import OptimizerConfig, make_optimizer
from flantune.train.state import ModelSpec, init_state, state_shardings
from flantune.train.step import StepConfig, make_train_step
from tests.train.test_loop import MODEL, _config


def _poisoned(steps: set[int]):
    """make_train_step whose batch weights are NaN at the given (0-based) steps."""
    original = make_train_step

    def make(spec, optimizer, schedule, config, objective=None):
        inner = original(spec, optimizer, schedule, config, objective)
        poisoned = jnp.asarray(sorted(steps) or [-1])

        def step(state, batch, frozen=None, reference=None):
            hit = jnp.any(state["step"] == poisoned)
            weights = batch["decoder_loss_weights"].astype(jnp.float32)
            batch = {**batch, "decoder_loss_weights": jnp.where(hit, jnp.nan, 1.0) * weights}
            return inner(state, batch, frozen, reference)

        return step

    return make


def _batch(rows: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    targets = rng.integers(2, 100, (rows, 6)).astype(np.int32)
    return {"encoder_input_tokens": rng.integers(2, 100, (rows, 8)).astype(np.int32),
            "decoder_target_tokens": targets,
            "decoder_input_tokens": np.concatenate([np.zeros((rows, 1), np.int32),
                                                    targets[:, :-1]], 1),
            "decoder_loss_weights": np.ones((rows, 6), np.float32)}


@pytest.mark.parametrize("skip", [True, False])
def test_a_nonfinite_step_is_skipped_or_applied(skip):
    spec = ModelSpec.from_config(MODEL)
    optimizer, schedule = make_optimizer(OptimizerConfig(name="adamw"))
    mesh = partitioning.make_mesh()
    shardings = state_shardings(spec, optimizer, mesh, partitioning.axis_rules())
    state = init_state(spec, optimizer, shardings)
    before = jax.device_get(state)
    step = jax.jit(make_train_step(spec, optimizer, schedule, StepConfig(skip_nonfinite=skip)))
    batch = _batch()
    batch["decoder_loss_weights"][0, 0] = np.nan
    after, metrics = step(state, batch)
    after = jax.device_get(after)
    assert float(metrics["nonfinite"]) == 1.0
    assert int(after["step"]) == 1
    same = jax.tree.leaves(jax.tree.map(np.array_equal, before["params"], after["params"]))
    if skip:
        assert all(same)
        assert all(jax.tree.leaves(jax.tree.map(
            lambda a, b: np.array_equal(a, b, equal_nan=True), before["opt_state"],
            after["opt_state"])))
    else:
        assert not all(same)
        assert any(np.isnan(x).any() for x in jax.tree.leaves(after["params"]))
    _, clean = step(jax.device_put(before), _batch())
    assert float(clean["nonfinite"]) == 0.0


def test_skipped_steps_are_logged_and_the_run_continues(tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "make_train_step", _poisoned({2}))
    result = train(_config(tmp_path, train_steps=5))
    assert result.final_step == 5
    logged = read_metrics(tmp_path / "train" / METRICS_JSONL)
    assert [s for s, m in logged.items() if m["nonfinite"]] == [3]
    assert np.isfinite(logged[5]["loss"])


def test_too_many_nonfinite_steps_stop_with_the_last_good_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "make_train_step", _poisoned({3, 4, 5, 6, 7}))
    config = _config(tmp_path, train_steps=9, max_nonfinite_steps=2,
                     checkpoint=CheckpointConfig(save_interval_steps=3, async_save=False))
    with pytest.raises(TrainError, match=r"3 steps had NaN/Inf.*last good checkpoint is step 3"
                       ) as err:
        train(config)
    assert "Loss before the failure: step 1: " in str(err.value)
    assert "step 4: nan" in str(err.value) and "Checkpoints: step 3 (loss " in str(err.value)
    assert sorted(int(p.name) for p in tmp_path.iterdir() if p.name.isdigit()) == [3]


def test_without_skipping_the_first_nonfinite_step_stops_the_run(tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "make_train_step", _poisoned({4}))
    config = _config(tmp_path, train_steps=9, step=StepConfig(skip_nonfinite=False),
                     checkpoint=CheckpointConfig(save_interval_steps=3, async_save=False))
    with pytest.raises(TrainError, match=r"step 5 .*corrupted.*last good checkpoint is step 3"):
        train(config)
    assert sorted(int(p.name) for p in tmp_path.iterdir() if p.name.isdigit()) == [3]


def test_the_loss_history_names_the_jump_and_the_checkpoints_after_it():
    losses = {1: 2.0, 2: 1.9, 3: 1.8, 4: 7.2, 5: 7.5, 6: float("nan")}
    text = loop.loss_history(losses, first_bad=6, checkpoints=[3, 5, 9])
    assert text.startswith("Loss before the failure: step 1: 2, step 2: 1.9, step 3: 1.8, "
                           "step 4: 7.2 (x4.0 over step 3: the largest jump), step 5: 7.5, "
                           "step 6: nan.")
    assert text.endswith("Checkpoints: step 3 (loss 1.8), step 5 (loss 7.5, after the jump).")
    calm = loop.loss_history({1: 2.0, 2: 2.1, 3: float("inf")}, first_bad=3, checkpoints=[])
    assert calm == "Loss before the failure: step 1: 2, step 2: 2.1, step 3: inf."
