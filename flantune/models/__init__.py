"""Flax NNX models: encoder-decoder T5 and decoder-only Llama / Mistral, with Hugging Face
checkpoint conversion."""

from flantune.models.build import ParamsMismatchError, build_model, model_params
from flantune.models.config import DecoderConfig, RopeScaling, T5Config
from flantune.models.convert import CheckpointError, load_hf_checkpoint, save_hf_checkpoint
from flantune.models.decoder import DecoderOnly
from flantune.models.t5 import EncoderDecoder

__all__ = [
    "CheckpointError",
    "DecoderConfig",
    "DecoderOnly",
    "EncoderDecoder",
    "ParamsMismatchError",
    "RopeScaling",
    "T5Config",
    "build_model",
    "load_hf_checkpoint",
    "model_params",
    "save_hf_checkpoint",
]
