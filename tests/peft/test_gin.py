"""Adapters from gin (gin_configs/peft/*.gin, composable with any model and run gin) and through
the command line: train, infer with ADAPTER_PATH, export."""

from __future__ import annotations

import json

import gin
import pytest

from flantune import cli
from flantune.peft import LoraConfig, PrefixConfig, PromptConfig

RUN = ["gin_configs/models/t5_1_1_tiny.gin", "gin_configs/runs/finetune.gin"]


def _train_config(files, bindings):
    from flantune import gin_config

    gin.clear_config()
    try:
        cli.parse_gin(files, ["MODEL_DIR = '/tmp/unused'", "MIXTURE_OR_TASK_NAME = 'demo'",
                              "TRAIN_STEPS = 5",
                              "TASK_FEATURE_LENGTHS = {'inputs': 8, 'targets': 8}", *bindings],
                      [])
        config = gin_config.train_config()
        unused = cli.unused_settings(also_read=cli.READ_BY_CLI)
    finally:
        gin.clear_config()
    return config, unused


def test_lora_prefix_and_prompt_gins_compose_with_a_model_and_a_run_gin():
    config, unused = _train_config([*RUN, "gin_configs/peft/lora.gin"],
                                   ["LORA_RANK = 4", "LORA_TARGET_MODULES = ['q', 'o']"])
    assert config.adapter == LoraConfig(r=4, alpha=16.0, dropout=0.05, target_modules=("q", "o"))
    assert config.optimizer.name == "adamw" and unused == []
    config, unused = _train_config([*RUN, "gin_configs/peft/prefix.gin"],
                                   ["PREFIX_TOKENS = 5", "PREFIX_PROJECTION = True"])
    assert config.adapter == PrefixConfig(num_virtual_tokens=5, projection=True)
    assert unused == []
    config, unused = _train_config([*RUN, "gin_configs/peft/prompt.gin"], ["PROMPT_TOKENS = 7"])
    assert config.adapter == PromptConfig(num_virtual_tokens=7) and not config.pack
    assert unused == []
    config, _ = _train_config(["gin_configs/runs/demo_lora.gin"], [])
    assert config.adapter.target_modules == "all-linear"
    assert config.initial_checkpoint_path == "runs/demo"


@pytest.mark.slow
def test_train_infer_and_export_an_adapter_from_the_command_line(tmp_path, capsys):
    fixtures = "--module_import=tests.task_fixtures"
    small = ["--gin.T5Config.vocab_size=8000", "--gin.TASK_FEATURE_LENGTHS={'inputs': 48, "
             "'targets': 16}", "--gin.BATCH_SIZE=4", "--gin.flantune.train_config.progress=False",
             "--gin.MIXTURE_OR_TASK_NAME='test_mix'"]
    base = tmp_path / "base"
    assert cli.main(["train", fixtures, *[f"--gin_file={f}" for f in RUN], *small,
                     f"--gin.MODEL_DIR='{base}'", "--gin.TRAIN_STEPS=2"]) == 0
    lora = tmp_path / "lora"
    assert cli.main(["train", fixtures, *[f"--gin_file={f}" for f in RUN],
                     "--gin_file=gin_configs/peft/lora.gin", *small, f"--gin.MODEL_DIR='{lora}'",
                     "--gin.TRAIN_STEPS=3", f"--gin.INITIAL_CHECKPOINT_PATH='{base}'",
                     "--gin.LORA_RANK=2"]) == 0
    out = capsys.readouterr().out
    assert "LoRA r=2, alpha=16 on 12 projections (query, value)" in out
    assert json.loads((lora / "adapter.json").read_text())["base"]["path"] == str(base)
    predictions = tmp_path / "predictions"
    assert cli.main(["infer", fixtures, "--gin_file=gin_configs/models/t5_1_1_tiny.gin",
                     "--gin_file=gin_configs/runs/infer.gin", "--gin.T5Config.vocab_size=8000",
                     f"--gin.CHECKPOINT_PATH='{base}'", f"--gin.ADAPTER_PATH='{lora}'",
                     "--gin.MIXTURE_OR_TASK_NAME='test_reverse'", "--gin.EVAL_MAX_EXAMPLES=4",
                     "--gin.EVAL_BATCH_SIZE=2", f"--gin.EVAL_OUTPUT_DIR='{predictions}'",
                     "--gin.TASK_FEATURE_LENGTHS={'inputs': 48, 'targets': 16}"]) == 0
    assert len((predictions / "test_reverse.jsonl").read_text().splitlines()) == 4
    # The adapter run is no CHECKPOINT_PATH of its own.
    assert cli.main(["infer", fixtures, "--gin_file=gin_configs/models/t5_1_1_tiny.gin",
                     "--gin_file=gin_configs/runs/infer.gin", "--gin.T5Config.vocab_size=8000",
                     f"--gin.CHECKPOINT_PATH='{lora}'", "--gin.MIXTURE_OR_TASK_NAME='test_reverse'",
                     f"--gin.EVAL_OUTPUT_DIR='{predictions}'"]) == 2
    assert "is an adapter checkpoint" in capsys.readouterr().err
    from flantune.export.command import main as convert

    assert convert(["flantune-to-hf", str(lora), str(tmp_path / "peft")]) == 0
    written = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert written["peft_type"] == "LORA" and written["r"] == 2
    assert written["base_model_name_or_path"] == str(base)
