"""Does a checkpoint's model match the run's beyond its parameter shapes?

Shapes alone do not pin a model down: a checkpoint trained with another activation, RoPE base,
normalization epsilon or position-bucket count loads into the run's model without complaint and
computes something else. Where a checkpoint records its model configuration (a parameter
checkpoint's config.json, a Hugging Face config.json, a training run's config.gin), every field
that changes the computation must agree with the run's.
"""

from __future__ import annotations

import dataclasses
import json

from etils import epath

from flantune.models.config import ModelConfig, config_from_dict
from flantune.models.convert.checkpoint import config_from_hf_dict
from flantune.train import checkpoint_kinds
from flantune.train.run_config import RunConfigError, read_run_config

# Fields that choose how the model runs, not what it computes: they may differ freely.
RUNTIME_FIELDS = frozenset({
    "dropout_rate", "param_dtype", "dtype", "remat", "scan_layers", "attention_kernel",
    "bos_token_id", "eos_token_id", "max_position_embeddings"})


def stored_model_config(location: checkpoint_kinds.CheckpointLocation) -> ModelConfig | None:
    """The model configuration a checkpoint records, or None where it records none."""
    try:
        if location.kind == checkpoint_kinds.PARAMS:
            text = (location.path / checkpoint_kinds.PARAMS_CONFIG_FILE).read_text()
            return config_from_dict(json.loads(text))
        if location.kind == checkpoint_kinds.HUGGING_FACE:
            text = (location.path / checkpoint_kinds.PARAMS_CONFIG_FILE).read_text()
            return config_from_hf_dict(json.loads(text))
        if location.run_dir is not None:
            return read_run_config(location.run_dir).model
    except (OSError, ValueError, KeyError, TypeError, RunConfigError):
        return None  # no readable record: the shape check is all there is
    return None


def architecture_differences(stored: ModelConfig, run: ModelConfig) -> list[str]:
    """``field: checkpoint X, run Y`` for every computation-changing field that differs."""
    if type(stored) is not type(run):
        return [f"model class: checkpoint {type(stored).__name__}, run {type(run).__name__}"]
    out = []
    for field in dataclasses.fields(run):
        if field.name in RUNTIME_FIELDS:
            continue
        a, b = getattr(stored, field.name), getattr(run, field.name)
        if a != b:
            out.append(f"{field.name}: checkpoint {a!r}, run {b!r}")
    return out


def check_architecture(location: checkpoint_kinds.CheckpointLocation, run: ModelConfig,
                       role: str) -> str | None:
    """An error message naming the differing fields, or None when they agree (or the
    checkpoint records no configuration)."""
    stored = stored_model_config(location)
    if stored is None:
        return None
    problems = architecture_differences(stored, run)
    if not problems:
        return None
    source = {checkpoint_kinds.PARAMS: "its config.json",
              checkpoint_kinds.HUGGING_FACE: "its config.json"}.get(
        location.kind, f"{epath.Path(location.run_dir or location.path) / 'config.gin'}")
    return (f"{role} {location.path} was trained as another model than this run's ("
            f"{source}): " + "; ".join(problems) + ". Set the run's model config (its model gin "
            "file or --gin.T5Config / DecoderConfig bindings) to the checkpoint's values.")
