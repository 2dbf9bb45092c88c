"""flantune's own parameter checkpoints (config.json + Orbax params)."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from flax import nnx

from flantune.models import CheckpointError, DecoderConfig, RopeScaling, build_model, model_params
from flantune.models.convert.native import load_params, save_params

CONFIG = DecoderConfig(vocab_size=64, emb_dim=16, num_heads=4, num_kv_heads=2, head_dim=4,
                       mlp_dim=24, num_layers=2, rope_scaling=RopeScaling(factor=2.0))


def test_round_trip_restores_config_and_params(tmp_path):
    params = model_params(build_model(CONFIG, nnx.Rngs(0)))
    save_params(CONFIG, params, tmp_path / "ckpt")
    config, restored = load_params(tmp_path / "ckpt")
    assert config == CONFIG
    assert list(restored["layers"]["layers"]) == [0, 1]  # integer layer keys survive
    jax.tree.map(np.testing.assert_array_equal, params, restored)


def test_config_mismatch_is_reported(tmp_path):
    save_params(CONFIG, model_params(build_model(CONFIG, nnx.Rngs(0))), tmp_path / "ckpt")
    config_file = tmp_path / "ckpt" / "config.json"
    data = json.loads(config_file.read_text())
    data["fields"]["no_such_field"] = 1
    config_file.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="no_such_field"):
        load_params(tmp_path / "ckpt")


def test_missing_directory_is_reported(tmp_path):
    with pytest.raises(CheckpointError, match="not a flantune parameter checkpoint"):
        load_params(tmp_path / "nothing")
