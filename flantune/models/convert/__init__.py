"""Hugging Face checkpoint conversion (config.json + safetensors, optionally sharded)."""

from flantune.models.convert.checkpoint import (
    config_from_hf_dict,
    config_to_hf_dict,
    load_hf_checkpoint,
    save_hf_checkpoint,
)
from flantune.models.convert.errors import CheckpointError
from flantune.models.convert.native import load_params, save_params

__all__ = [
    "CheckpointError",
    "config_from_hf_dict",
    "config_to_hf_dict",
    "load_hf_checkpoint",
    "load_params",
    "save_hf_checkpoint",
    "save_params",
]
