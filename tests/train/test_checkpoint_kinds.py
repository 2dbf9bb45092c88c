"""One decision of what kind of checkpoint a path holds, for train, eval and convert."""

from __future__ import annotations

import jax.numpy as jnp
import pytest

from flantune.evaluation.command import checkpoint_step
from flantune.models import DecoderConfig, save_hf_checkpoint
from flantune.models.convert import save_params
from flantune.train.checkpoint_kinds import (
    HUGGING_FACE,
    MODEL_DIR,
    PARAMS,
    STEP,
    CheckpointKindError,
    locate_checkpoint,
)
from flantune.train.checkpoints import CheckpointConfig, Checkpointer, CheckpointError
from tests.train.test_checkpoints import random_params

TINY = DecoderConfig(vocab_size=32, emb_dim=8, num_heads=2, num_kv_heads=1, head_dim=4,
                     mlp_dim=16, num_layers=1)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("kinds")
    params = random_params(TINY)
    config = CheckpointConfig(save_interval_steps=1, async_save=False)
    with Checkpointer(root / "run", config) as checkpointer:
        for step in (3, 8):
            checkpointer.save(step, {"params": params, "step": jnp.asarray(step)})
    save_params(TINY, params, root / "ours")
    save_hf_checkpoint(TINY, params, root / "hf")
    return root


def test_every_kind_is_recognized(checkpoints):
    run = locate_checkpoint(checkpoints / "run")
    assert (run.kind, run.step, run.run_dir) == (MODEL_DIR, 8, checkpoints / "run")
    assert run.state_path == checkpoints / "run" / "8" / "state"
    step = locate_checkpoint(checkpoints / "run" / "3")
    assert (step.kind, step.step, step.run_dir) == (STEP, 3, checkpoints / "run")
    assert locate_checkpoint(checkpoints / "ours").kind == PARAMS
    assert locate_checkpoint(checkpoints / "hf").kind == HUGGING_FACE


def test_eval_takes_the_step_from_the_same_decision(checkpoints):
    assert checkpoint_step(str(checkpoints / "run")) == 8
    assert checkpoint_step(str(checkpoints / "run" / "3")) == 3
    assert checkpoint_step(str(checkpoints / "ours")) is None
    assert checkpoint_step(str(checkpoints / "hf")) is None
    with pytest.raises(CheckpointError, match="CHECKPOINT_PATH .*nothing does not exist"):
        checkpoint_step(str(checkpoints / "nothing"))


def test_anything_else_names_the_path_its_contents_and_the_kinds(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointKindError) as err:
        locate_checkpoint(tmp_path, "INITIAL_CHECKPOINT_PATH")
    message = str(err.value)
    assert f"INITIAL_CHECKPOINT_PATH {tmp_path} is not a checkpoint" in message
    assert "config.json, weights.bin" in message
    for kind in ("MODEL_DIR", "step directory", "config.json + params/", "*.safetensors"):
        assert kind in message
    with pytest.raises(CheckpointKindError, match="is a file, not a checkpoint directory"):
        locate_checkpoint(tmp_path / "weights.bin")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointKindError, match="it is empty"):
        locate_checkpoint(tmp_path / "empty")
