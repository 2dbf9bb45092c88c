"""Preference tuning from gin: gin_configs/preference/dpo.gin composes with a model and a run
gin (alone and with LoRA), every setting is read, and the demo's run gin parses."""

from __future__ import annotations

import gin
import pytest

from flantune import cli
from flantune.peft import LoraConfig
from flantune.preference import PreferenceConfig, PreferenceObjective

RUN = ["gin_configs/models/llama_tiny.gin", "gin_configs/runs/finetune.gin"]


def _train_config(files, bindings):
    from flantune import gin_config

    gin.clear_config()
    try:
        cli.parse_gin(files, ["MODEL_DIR = '/tmp/unused'", "MIXTURE_OR_TASK_NAME = 'dpo_example'",
                              "TRAIN_STEPS = 5", "TASK_FEATURE_LENGTHS = {'targets': 64}",
                              *bindings], [])
        config = gin_config.train_config()
        # The vocabulary and chat template are read by cli.main before the run configuration.
        unused = [u for u in cli.unused_settings(also_read=cli.READ_BY_CLI)
                  if not u.startswith(("flantune.vocabulary.", "flantune.chat_template."))]
    finally:
        gin.clear_config()
    return config, unused


def test_dpo_gin_composes_with_a_model_and_a_run_gin():
    config, unused = _train_config([*RUN, "gin_configs/preference/dpo.gin"],
                                   ["DPO_LOSS = 'ipo'", "DPO_BETA = 0.5",
                                    "DPO_PRECOMPUTE_REFERENCE = True"])
    assert isinstance(config.objective, PreferenceObjective)
    assert config.objective.config == PreferenceConfig(loss="ipo", beta=0.5,
                                                       precompute_reference=True)
    assert config.adapter is None and config.optimizer.name == "adamw" and unused == []


def test_dpo_gin_with_lora_and_the_demo_run_gin():
    config, unused = _train_config([*RUN, "gin_configs/peft/lora.gin",
                                    "gin_configs/preference/dpo.gin"], [])
    assert isinstance(config.adapter, LoraConfig) and unused == []
    assert config.objective.config.reference == "auto"
    config, unused = _train_config(["gin_configs/runs/demo_dpo.gin"], [])
    assert config.initial_checkpoint_path == "runs/demo_chat" and unused == []
    assert config.objective.config.eval_every_steps == 50


def test_a_bad_preference_setting_is_an_error_naming_it():
    with pytest.raises(Exception, match="PreferenceConfig.loss 'dpo'"):
        _train_config([*RUN, "gin_configs/preference/dpo.gin"], ["DPO_LOSS = 'dpo'"])
