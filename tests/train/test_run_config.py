"""A MODEL_DIR's config.gin, read without gin's global configuration, gives what gin itself
builds from it."""

from __future__ import annotations

from pathlib import Path

import gin
import pytest

import flantune.cli  # noqa: F401  (registers flantune.vocabulary)
import flantune.gin_config  # noqa: F401  (registers flantune.train_config)
from flantune.models import DecoderConfig, RopeScaling, T5Config
from flantune.models.gin_registry import model_config
from flantune.train.run_config import RunConfigError, read_run_config

ROOT = Path(__file__).resolve().parents[2]


def _config_gin(tmp_path: Path, model_file: str, bindings: list[str]):
    """Writes the config.gin `flantune train` would write and returns what gin builds."""
    with gin.unlock_config():
        gin.clear_config()
    gin.add_config_file_search_path(str(ROOT))
    try:
        gin.parse_config_files_and_bindings(
            [str(ROOT / "gin_configs" / "models" / model_file),
             str(ROOT / "gin_configs" / "runs" / "finetune.gin")], bindings)
        (tmp_path / "config.gin").write_text(gin.config_str())
        return model_config(), gin.query_parameter("%TASK_FEATURE_LENGTHS")
    finally:
        gin.clear_config()


RUN = ["MODEL_DIR = '/tmp/run'", "MIXTURE_OR_TASK_NAME = 'demo'", "TRAIN_STEPS = 3"]


def test_a_decoder_run_reads_as_gin_builds_it(tmp_path):
    model, lengths = _config_gin(tmp_path, "llama_tiny.gin", [
        *RUN, "TASK_FEATURE_LENGTHS = {'inputs': 64, 'targets': 16}", "VOCAB = 8000",
        "DecoderConfig.vocab_size = %VOCAB", "DecoderConfig.rope_scaling = @RopeScaling()",
        "RopeScaling.factor = 4.0", "flantune.vocabulary.path = '/data/spm.model'",
        "flantune.vocabulary.extra_ids = 100", "eval/DecoderConfig.num_layers = 7"])
    run = read_run_config(tmp_path)
    assert run.model == model
    assert isinstance(run.model, DecoderConfig) and run.model.vocab_size == 8000
    assert run.model.rope_scaling == RopeScaling(factor=4.0)
    assert run.model.num_layers == 2  # the scoped binding does not apply to the run's model
    assert run.task_feature_lengths == lengths == {"inputs": 64, "targets": 16}
    assert run.prefix_lm
    assert (run.vocabulary_path, run.extra_ids) == ("/data/spm.model", 100)


def test_a_t5_run_and_a_decoder_without_inputs_are_no_prefix_lms(tmp_path):
    model, _ = _config_gin(tmp_path, "t5_1_1_tiny.gin",
                           [*RUN, "TASK_FEATURE_LENGTHS = {'inputs': 64, 'targets': 16}"])
    run = read_run_config(tmp_path)
    assert run.model == model and isinstance(model, T5Config) and not run.prefix_lm
    assert (run.vocabulary_path, run.extra_ids) == (None, 0)
    _config_gin(tmp_path, "llama_tiny.gin", [*RUN, "TASK_FEATURE_LENGTHS = {'targets': 64}"])
    assert not read_run_config(tmp_path).prefix_lm


def test_a_directory_without_config_gin_is_reported(tmp_path):
    with pytest.raises(RunConfigError, match=r"has no config.gin or operative_config.gin"):
        read_run_config(tmp_path)


def test_a_config_without_a_model_is_reported(tmp_path):
    (tmp_path / "config.gin").write_text("MODEL_DIR = 'x'\nT5Config.emb_dim = 8\n")
    with pytest.raises(RunConfigError, match="no model configuration"):
        read_run_config(tmp_path)
    (tmp_path / "config.gin").write_text("model_config.config = @T5Config()\n"
                                         "T5Config.emb_dim = %UNBOUND\n")
    with pytest.raises(RunConfigError, match=r"T5Config.emb_dim uses macro %UNBOUND"):
        read_run_config(tmp_path)
    (tmp_path / "config.gin").write_text("model_config.config = @T5Config()\n"
                                         "T5Config.no_such_field = 1\n")
    with pytest.raises(RunConfigError, match=r"T5Config has no parameter\(s\) \['no_such"):
        read_run_config(tmp_path)
