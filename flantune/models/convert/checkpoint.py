"""Hugging Face checkpoints (config.json + safetensors, optionally sharded) <-> flantune
(config, params), tensor by tensor.

Loading reads config.json, derives every expected tensor name and shape, and checks them all
against the file headers before reading any data, so a bad checkpoint fails with one error naming
every missing, extra or misshapen tensor and nothing is half-loaded. Data is then read one tensor
at a time and placed straight into the parameter tree (a single copy of the weights in memory).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from flantune.models.config import DecoderConfig, ModelConfig, T5Config
from flantune.models.convert import llama_format, t5_format
from flantune.models.convert.errors import CheckpointError
from flantune.models.convert.safetensors_files import (
    INDEX_FILE,
    SINGLE_FILE,
    ShardedWriter,
    list_tensors,
    read_tensors,
)
from flantune.models.convert.specs import TensorSpec

Params = dict[str, Any]
DEFAULT_MAX_SHARD_SIZE = 5 * 1024**3
GENERATION_CONFIG_FILE = "generation_config.json"
# The pad and eos ids every flantune vocabulary has (flantune.data.vocabulary checks them).
PAD_ID, EOS_ID = 0, 1

# Hugging Face architecture name -> (family, parser of config.json).
_ARCHITECTURES: dict[str, Callable[..., ModelConfig]] = {
    t5_format.ARCHITECTURE: lambda hf, **kw: t5_format.config_from_hf(hf, **kw),
    "LlamaForCausalLM": lambda hf, **kw: llama_format.config_from_hf(hf, "llama", **kw),
    "MistralForCausalLM": lambda hf, **kw: llama_format.config_from_hf(hf, "mistral", **kw),
}
_MODEL_TYPES = {"t5": t5_format.ARCHITECTURE, "llama": "LlamaForCausalLM",
                "mistral": "MistralForCausalLM"}


def config_from_hf_dict(hf: dict[str, Any], *, param_dtype: str = "float32",
                        source: str = "config.json") -> ModelConfig:
    """The flantune configuration for a Hugging Face config.json dict."""
    architectures = hf.get("architectures") or []
    if not architectures and hf.get("model_type") in _MODEL_TYPES:
        architectures = [_MODEL_TYPES[hf["model_type"]]]
    if len(architectures) != 1 or architectures[0] not in _ARCHITECTURES:
        raise CheckpointError(
            f"{source}: unknown architecture {architectures or hf.get('model_type')!r}; "
            f"supported: {sorted(_ARCHITECTURES)}")
    try:
        return _ARCHITECTURES[architectures[0]](hf, param_dtype=param_dtype)
    except KeyError as err:
        raise CheckpointError(f"{source}: required field {err.args[0]!r} is missing") from err


@dataclasses.dataclass(frozen=True)
class TokenIds:
    """The special ids a model was trained with: `bos` starts every decoder-only sequence,
    `decoder_start` every T5 decoder sequence (None where it does not apply)."""

    pad: int | None
    eos: int
    bos: int | None = None
    decoder_start: int | None = None


def flantune_token_ids(config: ModelConfig) -> TokenIds:
    """The ids of a model trained by flantune: its vocabularies have pad 0 and eos 1, and every
    decoder sequence starts with 0 (SeqIO's shift right; `decode_config_for`'s BOS)."""
    if isinstance(config, T5Config):
        return TokenIds(pad=PAD_ID, eos=EOS_ID, decoder_start=PAD_ID)
    return TokenIds(pad=PAD_ID, eos=EOS_ID, bos=PAD_ID)


def config_token_ids(config: ModelConfig) -> TokenIds:
    """The ids a configuration carries (a decoder's come from the Hugging Face config.json it
    was converted from)."""
    if isinstance(config, T5Config):
        return flantune_token_ids(config)
    return TokenIds(pad=None, eos=config.eos_token_id, bos=config.bos_token_id)


def config_to_hf_dict(config: ModelConfig, token_ids: TokenIds | None = None) -> dict[str, Any]:
    """The Hugging Face config.json dict for a flantune configuration, with `token_ids`
    (default: `config_token_ids(config)`)."""
    ids = config_token_ids(config) if token_ids is None else token_ids
    if isinstance(config, T5Config):
        out = t5_format.config_to_hf(config)
        out.update(decoder_start_token_id=ids.decoder_start, pad_token_id=ids.pad,
                   eos_token_id=ids.eos)
    else:
        out = llama_format.config_to_hf(config)
        out.update(bos_token_id=ids.bos, eos_token_id=ids.eos, pad_token_id=ids.pad)
    return out


def generation_config_dict(config: ModelConfig, token_ids: TokenIds) -> dict[str, Any]:
    """generation_config.json: the ids `generate` starts, pads and stops with."""
    keys = {"bos_token_id": token_ids.bos, "eos_token_id": token_ids.eos,
            "pad_token_id": token_ids.pad, "decoder_start_token_id": token_ids.decoder_start}
    return {key: value for key, value in keys.items() if value is not None}


def _format(config: ModelConfig):
    if isinstance(config, T5Config):
        return t5_format
    if isinstance(config, DecoderConfig):
        return llama_format
    raise TypeError(f"unknown model configuration type {type(config).__name__}")


def tensor_specs(config: ModelConfig) -> list[TensorSpec]:
    """The checkpoint tensors for `config`, in file order."""
    return _format(config).tensor_specs(config)


def _validate(directory: Path, specs: list[TensorSpec], optional: dict[str, tuple[int, ...]],
              stored: dict) -> None:
    problems = []
    for s in specs:
        if s.hf_name not in stored:
            problems.append(f"missing tensor {s.hf_name!r} (expected shape {s.hf_shape})")
        elif stored[s.hf_name].shape != s.hf_shape:
            problems.append(f"tensor {s.hf_name!r}: expected shape {s.hf_shape}, "
                            f"found {stored[s.hf_name].shape}")
    known = {s.hf_name for s in specs}
    for name, info in stored.items():
        if name in known:
            continue
        if name not in optional:
            problems.append(f"unexpected tensor {name!r} (shape {info.shape}) in {info.file.name}")
        elif info.shape != optional[name]:
            problems.append(f"tensor {name!r}: expected shape {optional[name]}, "
                            f"found {info.shape}")
    if problems:
        raise CheckpointError(f"{directory}: checkpoint does not match its config.json "
                              f"({len(problems)} problem(s)): " + "; ".join(problems))


def _set(tree: Params, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _get(tree: Params, path: tuple[Any, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def load_hf_checkpoint(path: str | Path, *, param_dtype: str = "float32",
                       scan_layers: bool = False) -> tuple[ModelConfig, Params]:
    """Reads a Hugging Face checkpoint directory into (config, params).

    `params` is the nested dict `flantune.models.build_model(config, params=params)` takes,
    as jax arrays in `param_dtype`. With `scan_layers`, layer parameters are stacked on a leading
    axis for a scanned model.
    """
    directory = Path(path)
    config_path = directory / "config.json"
    try:
        hf = json.loads(config_path.read_text())
    except FileNotFoundError as err:
        raise CheckpointError(f"{config_path}: not found; a Hugging Face checkpoint directory "
                              "needs config.json beside its safetensors files") from err
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{config_path}: invalid JSON ({err})") from err
    config = config_from_hf_dict(hf, param_dtype=param_dtype, source=str(config_path))
    if scan_layers:
        config = type(config)(**{**config.__dict__, "scan_layers": True})
    specs = tensor_specs(config)
    stored = list_tensors(directory)
    aliases = _tied_head(config, hf, stored)
    _validate(directory, specs, _format(config).optional_tensors(config),
              {**stored, **{name: stored[source] for name, source in aliases.items()}})

    dtype = jnp.dtype(param_dtype)
    by_source: dict[str, list[TensorSpec]] = {}
    for s in specs:
        by_source.setdefault(aliases.get(s.hf_name, s.hf_name), []).append(s)
    params: Params = {}
    stacked: dict[tuple[Any, ...], np.ndarray] = {}
    for name, array in read_tensors(stored, list(by_source)):
        for s in by_source[name]:
            value = s.to_param(array).astype(dtype, copy=False)
            if s.layer is None:
                _set(params, s.path, jnp.asarray(value))
                continue
            if s.path not in stacked:
                num_layers = _num_layers(config, s.path)
                stacked[s.path] = np.empty((num_layers, *s.param_shape), dtype)
            stacked[s.path][s.layer] = value
    for path_key, value in stacked.items():
        _set(params, path_key, jnp.asarray(value))
    return config, params


def _tied_head(config: ModelConfig, hf: dict[str, Any], stored: dict) -> dict[str, str]:
    """{'lm_head.weight': 'shared.weight'} for a T5 whose output layer is tied to the embedding
    without T5 v1.0's output scaling (transformers 5 writes such a v1.1 with
    tie_word_embeddings=true, scale_decoder_outputs=false and no lm_head.weight in the file):
    flantune loads it as an untied head holding a copy of the embedding."""
    if (isinstance(config, T5Config) and not config.tie_word_embeddings
            and hf.get("tie_word_embeddings", True) and "lm_head.weight" not in stored
            and "shared.weight" in stored):
        return {"lm_head.weight": "shared.weight"}
    return {}


def _num_layers(config: ModelConfig, path: tuple[Any, ...]) -> int:
    if isinstance(config, T5Config):
        return config.num_encoder_layers if path[0] == "encoder" else config.num_decoder_layers
    return config.num_layers


def save_hf_checkpoint(config: ModelConfig, params: Params, path: str | Path, *,
                       max_shard_size: int = DEFAULT_MAX_SHARD_SIZE,
                       dtype: str | None = None, token_ids: TokenIds | None = None,
                       extra_config: dict[str, Any] | None = None) -> list[Path]:
    """Writes config.json, generation_config.json and safetensors files (sharded above
    `max_shard_size` bytes, with `model.safetensors.index.json`) that transformers loads.
    Tensors are stored in `dtype` (default: the parameters' dtype); `token_ids` (default:
    `config_token_ids(config)`) go into both configs, `extra_config` into config.json. Every
    parameter is checked before anything is written. Returns the safetensors files written."""
    ids = config_token_ids(config) if token_ids is None else token_ids
    hf_config = {**config_to_hf_dict(config, ids), **(extra_config or {})}
    directory = Path(path)
    specs = tensor_specs(config)
    problems = []
    for s in specs:
        try:
            shape = tuple(np.shape(_get(params, s.path)))
        except (KeyError, IndexError, TypeError):
            problems.append(f"missing parameter {'/'.join(map(str, s.path))} for {s.hf_name}")
            continue
        expected = s.param_shape if s.layer is None else (_num_layers(config, s.path),
                                                          *s.param_shape)
        if shape != expected:
            problems.append(f"parameter {'/'.join(map(str, s.path))}: expected shape {expected}, "
                            f"found {shape}")
    if problems:
        raise CheckpointError("parameters do not match the configuration: " + "; ".join(problems))

    directory.mkdir(parents=True, exist_ok=True)
    stale = [directory / SINGLE_FILE, directory / INDEX_FILE,
             *directory.glob("model-*-of-*.safetensors")]
    writer = ShardedWriter(directory, max_shard_size)
    for s in specs:
        value = _get(params, s.path)
        if s.layer is not None:
            value = value[s.layer]
        array = np.asarray(value)
        if dtype is not None:
            array = array.astype(jnp.dtype(dtype))
        writer.add(s.hf_name, s.to_hf(array))
    written = writer.close()
    keep = {*written, directory / INDEX_FILE} if len(written) > 1 else set(written)
    for old in stale:
        if old.exists() and old not in keep:
            old.unlink()
    (directory / "config.json").write_text(json.dumps(hf_config, indent=2))
    (directory / GENERATION_CONFIG_FILE).write_text(
        json.dumps(generation_config_dict(config, ids), indent=2))
    return written
