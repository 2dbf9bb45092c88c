"""Hugging Face peft's adapter files: `adapter_config.json` + `adapter_model.safetensors`, as
`peft.PeftModel.from_pretrained(base_model, directory)` reads them and `save_pretrained`
writes them, for LoRA, prefix tuning and prompt tuning (whose table is `prompt_embeddings`).

Keys are `base_model.model.<module>.lora_A.weight` [r, in] and `.lora_B.weight` [out, r] in
torch's [out, in] layout, with the module names of flantune's Hugging Face converter (Llama's
q/k projections need no RoPE permutation: flantune's RoPE uses the half-split layout
transformers stores). Only what flantune's LoRA computes is read or written; peft options it
does not compute (DoRA, biases, per-module ranks, layer subsets, modules_to_save) are errors
on import, never dropped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy
from safetensors import safe_open

from flantune.models.config import ModelConfig, T5Config
from flantune.models.convert.errors import CheckpointError
from flantune.models.layers import PREFIX_ATTRIBUTE, PROMPT_ATTRIBUTE
from flantune.peft.config import AdapterConfig, LoraConfig, PrefixConfig, PromptConfig
from flantune.peft.lora import lora_matrices, lora_path
from flantune.peft.prefix import folded_table, prefix_layout
from flantune.peft.targets import TargetError, hf_target_modules, select

ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
KEY_PREFIX = "base_model.model."
PREFIX_KEY = "prompt_embeddings"  # prefix tuning's table (peft's name)

# peft options whose default flantune's LoRA computes; any other value is refused on import.
# Exports leave them out (peft fills in its defaults; older peft versions know fewer names).
_DEFAULTS = {"bias": "none", "use_dora": False, "fan_in_fan_out": False, "rank_pattern": {},
             "alpha_pattern": {}, "layers_to_transform": None, "layers_pattern": None,
             "modules_to_save": None, "exclude_modules": None, "trainable_token_indices": None,
             "lora_bias": False, "target_parameters": None, "layer_replication": None,
             "use_qalora": False, "use_bdlora": None, "alora_invocation_tokens": None,
             "arrow_config": None, "megatron_config": None}


def is_peft_adapter(directory: str | Path) -> bool:
    return (Path(directory) / ADAPTER_CONFIG_FILE).is_file()


def task_type(config: ModelConfig) -> str:
    return "SEQ_2_SEQ_LM" if isinstance(config, T5Config) else "CAUSAL_LM"


def lora_keys(hf_module: str) -> tuple[str, str]:
    return (f"{KEY_PREFIX}{hf_module}.lora_A.weight", f"{KEY_PREFIX}{hf_module}.lora_B.weight")


def adapter_config_dict(model_config: ModelConfig, lora: LoraConfig,
                        base_model_name_or_path: str | None = None) -> dict[str, Any]:
    """adapter_config.json for `lora` on `model_config`."""
    chosen = select(model_config, lora.target_modules)
    return {
        "peft_type": "LORA", "task_type": task_type(model_config),
        "base_model_name_or_path": base_model_name_or_path, "inference_mode": True,
        "r": lora.r, "lora_alpha": lora.alpha, "lora_dropout": lora.dropout,
        "use_rslora": lora.use_rslora,
        "target_modules": hf_target_modules(model_config, chosen),
    }


def prefix_config_dict(model_config: ModelConfig, prefix: PrefixConfig,
                       base_model_name_or_path: str | None = None) -> dict[str, Any]:
    """adapter_config.json for prefix tuning (the table saved folded, so no projection)."""
    layout = prefix_layout(model_config)
    return {
        "peft_type": "PREFIX_TUNING", "task_type": task_type(model_config),
        "base_model_name_or_path": base_model_name_or_path, "inference_mode": True,
        "num_virtual_tokens": prefix.num_virtual_tokens, "token_dim": layout.token_dim,
        "num_layers": layout.layers, "num_attention_heads": layout.heads,
        "num_transformer_submodules": 2 if isinstance(model_config, T5Config) else 1,
        "encoder_hidden_size": prefix.projection_hidden or layout.token_dim,
        "prefix_projection": False,
    }


def prompt_config_dict(model_config: ModelConfig, prompt: PromptConfig,
                       base_model_name_or_path: str | None = None) -> dict[str, Any]:
    """adapter_config.json for prompt tuning. One transformer submodule for T5 too: peft's
    seq2seq default (2) stores a second, never-read copy of the prompt."""
    return {
        "peft_type": "PROMPT_TUNING", "task_type": task_type(model_config),
        "base_model_name_or_path": base_model_name_or_path, "inference_mode": True,
        "num_virtual_tokens": prompt.num_virtual_tokens, "token_dim": model_config.emb_dim,
        "num_transformer_submodules": 1, "prompt_tuning_init": "RANDOM",
    }


def save_peft_adapter(model_config: ModelConfig, adapter_config: AdapterConfig, adapter: dict,
                      directory: str | Path, *, base_model_name_or_path: str | None = None,
                      dtype: str | None = None) -> list[Path]:
    """Writes the adapter's two files into `directory`; returns them. Prefix tuning's MLP (if
    any) is folded into the table, as peft saves it."""
    directory = Path(directory)
    tensors: dict[str, np.ndarray] = {}
    if isinstance(adapter_config, PrefixConfig):
        if adapter_config.t5_encoder:
            raise CheckpointError(
                "PrefixConfig.t5_encoder=True prefixes T5's encoder too, which peft's prefix "
                "tuning cannot express (it prefixes the decoder's self-attention only); such an "
                "adapter stays a flantune checkpoint (evaluate it with ADAPTER_PATH)")
        tensors[PREFIX_KEY] = folded_table(adapter, adapter_config)
        config = prefix_config_dict(model_config, adapter_config, base_model_name_or_path)
    elif isinstance(adapter_config, PromptConfig):
        tensors[PREFIX_KEY] = np.asarray(adapter[PROMPT_ATTRIBUTE]["embedding"], np.float32)
        config = prompt_config_dict(model_config, adapter_config, base_model_name_or_path)
    else:
        for projection in select(model_config, adapter_config.target_modules):
            a, b = lora_matrices(adapter, projection)
            key_a, key_b = lora_keys(projection.hf_module)
            tensors[key_a] = np.ascontiguousarray(a.T)
            tensors[key_b] = np.ascontiguousarray(b.T)
        config = adapter_config_dict(model_config, adapter_config, base_model_name_or_path)
    if dtype is not None:
        tensors = {k: v.astype(np.dtype(dtype)) for k, v in tensors.items()}
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / ADAPTER_WEIGHTS_FILE
    safetensors.numpy.save_file(tensors, str(weights), metadata={"format": "pt"})
    config_path = directory / ADAPTER_CONFIG_FILE
    config_path.write_text(json.dumps(config, indent=2))
    return [config_path, weights]


def _read_config(directory: Path) -> dict[str, Any]:
    path = directory / ADAPTER_CONFIG_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: not found; a peft adapter directory holds "
                              f"{ADAPTER_CONFIG_FILE} and {ADAPTER_WEIGHTS_FILE}") from None
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: invalid JSON ({err})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def lora_config_from_peft(data: dict[str, Any], source: str) -> LoraConfig:
    """The LoraConfig of a peft adapter_config.json dict; unsupported options are errors."""
    kind = data.get("peft_type")
    if kind != "LORA":
        raise CheckpointError(f"{source}: peft_type {kind!r} is not supported for import "
                              "(flantune reads LORA, PREFIX_TUNING and PROMPT_TUNING adapters)")
    for option, default in _DEFAULTS.items():
        value = data.get(option, default)
        if value != default and value not in (None, {}, [], False, "none"):
            raise CheckpointError(f"{source}: {option}={value!r} is not supported (flantune's "
                                  f"LoRA computes {option}={default!r}); merge the adapter with "
                                  "peft and convert the merged model instead")
    targets = data.get("target_modules")
    if isinstance(targets, list):
        targets = tuple(targets)
    if targets is None:
        raise CheckpointError(f"{source}: target_modules is missing")
    try:
        return LoraConfig(r=int(data["r"]), alpha=float(data.get("lora_alpha", 8)),
                          dropout=float(data.get("lora_dropout", 0.0)),
                          target_modules=targets, use_rslora=bool(data.get("use_rslora")))
    except (KeyError, ValueError, TypeError) as err:
        raise CheckpointError(f"{source}: not a LoRA configuration flantune reads "
                              f"({type(err).__name__}: {err})") from None


def _read_weights(directory: Path) -> tuple[Path, dict[str, np.ndarray]]:
    weights = directory / ADAPTER_WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{weights}: not found (flantune reads the safetensors form; "
                              "save the adapter with safe_serialization=True)")
    with safe_open(str(weights), framework="numpy") as handle:
        return weights, {name: handle.get_tensor(name) for name in handle.keys()}


def _load_prefix(directory: Path, data: dict[str, Any], model_config: ModelConfig
                 ) -> tuple[PrefixConfig, dict]:
    source = str(directory / ADAPTER_CONFIG_FILE)
    try:
        layout = prefix_layout(model_config)
    except ValueError as err:
        raise CheckpointError(f"{source}: {err}") from None
    expected = {"num_layers": layout.layers, "token_dim": layout.token_dim,
                "num_attention_heads": layout.heads}
    for option, value in expected.items():
        if data.get(option) not in (None, value):
            raise CheckpointError(f"{source}: {option}={data[option]!r}, but this model's "
                                  f"prefix layout has {option}={value} (another base model?)")
    prefix = _virtual_tokens_config(PrefixConfig, data, source)
    table = _read_table(directory, (prefix.num_virtual_tokens, layout.width))
    return prefix, {PREFIX_ATTRIBUTE: {"embedding": table}}


def _virtual_tokens_config(cls: type, data: dict[str, Any], source: str):
    """PrefixConfig / PromptConfig of the adapter's num_virtual_tokens."""
    try:
        return cls(num_virtual_tokens=int(data["num_virtual_tokens"]))
    except (KeyError, ValueError, TypeError) as err:
        raise CheckpointError(f"{source}: not a {data.get('peft_type')} configuration flantune "
                              f"reads ({type(err).__name__}: {err})") from None


def _read_table(directory: Path, shape: tuple[int, int]) -> np.ndarray:
    """The adapter's one tensor, `prompt_embeddings` of `shape` (and no other tensor)."""
    weights, stored = _read_weights(directory)
    problems = [] if PREFIX_KEY in stored else [f"missing tensor {PREFIX_KEY!r} (shape {shape})"]
    if PREFIX_KEY in stored and stored[PREFIX_KEY].shape != shape:
        problems.append(f"tensor {PREFIX_KEY!r}: expected shape {shape}, found "
                        f"{stored[PREFIX_KEY].shape}")
    problems += [f"unexpected tensor {name!r}" for name in sorted(set(stored) - {PREFIX_KEY})]
    if problems:
        raise CheckpointError(f"{weights}: the adapter does not fit this model: "
                              + "; ".join(problems))
    return stored[PREFIX_KEY]


def _load_prompt(directory: Path, data: dict[str, Any], model_config: ModelConfig
                 ) -> tuple[PromptConfig, dict]:
    source = str(directory / ADAPTER_CONFIG_FILE)
    if data.get("token_dim") not in (None, model_config.emb_dim):
        raise CheckpointError(f"{source}: token_dim={data['token_dim']!r}, but this model's "
                              f"embeddings are {model_config.emb_dim} wide (another base model?)")
    prompt = _virtual_tokens_config(PromptConfig, data, source)
    n = prompt.num_virtual_tokens
    # peft's seq2seq default keeps 2 submodules' rows and reads only the first n.
    copies = int(data.get("num_transformer_submodules") or 1)
    table = _read_table(directory, (n * copies, model_config.emb_dim))
    return prompt, {PROMPT_ATTRIBUTE: {"embedding": table[:n]}}


def load_peft_adapter(directory: str | Path, model_config: ModelConfig
                      ) -> tuple[AdapterConfig, dict]:
    """(adapter configuration, adapter parameters as numpy arrays in flantune's layout) of a
    peft adapter directory (LoRA or prefix tuning) for a model of `model_config`; every
    expected key must be there with its shape, and no other key."""
    directory = Path(directory)
    source = str(directory / ADAPTER_CONFIG_FILE)
    data = _read_config(directory)
    if data.get("peft_type") == "PREFIX_TUNING":
        return _load_prefix(directory, data, model_config)
    if data.get("peft_type") == "PROMPT_TUNING":
        return _load_prompt(directory, data, model_config)
    lora = lora_config_from_peft(data, source)
    try:
        chosen = select(model_config, lora.target_modules)
    except TargetError as err:
        raise CheckpointError(f"{source}: {err}") from None
    weights, stored = _read_weights(directory)
    adapter: dict = {}
    problems, used = [], set()
    stacked: dict[tuple, list] = {}
    for projection in chosen:
        key_a, key_b = lora_keys(projection.hf_module)
        expected = {key_a: (lora.r, projection.in_features),
                    key_b: (projection.out_features, lora.r)}
        found = [f"missing tensor {key!r} (shape {shape})" if key not in stored else
                 f"tensor {key!r}: expected shape {shape}, found {stored[key].shape}"
                 for key, shape in expected.items()
                 if key not in stored or stored[key].shape != shape]
        if found:
            problems += found
            continue
        used.update(expected)
        a = stored[key_a].T.reshape(*projection.in_shape, lora.r)
        b = stored[key_b].T.reshape(lora.r, *projection.out_shape)
        for which, value in (("lora_a", a), ("lora_b", b)):
            path = lora_path(projection, which)
            if projection.layer is None:
                _set(adapter, path, value)
            else:
                stacked.setdefault(path, []).append((projection.layer, value))
    problems += [f"unexpected tensor {name!r} (shape {stored[name].shape}): no projection of "
                 "the model matches it" for name in sorted(set(stored) - used)]
    if problems:
        raise CheckpointError(f"{weights}: the adapter does not fit this model "
                              f"({len(problems)} problem(s)): " + "; ".join(problems[:8])
                              + (" ..." if len(problems) > 8 else ""))
    for path, layers in stacked.items():
        _set(adapter, path, np.stack([value for _, value in sorted(layers, key=lambda x: x[0])]))
    return lora, adapter


def _set(tree: dict, path: tuple, value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value
