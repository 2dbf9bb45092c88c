"""Llama / Mistral in Hugging Face's `LlamaForCausalLM` / `MistralForCausalLM` layout.

Hugging Face stores q/k projections already permuted for the half-split ("rotate_half") RoPE
layout, which is the layout flantune's RoPE uses, so weights copy without permutation.
"""

from __future__ import annotations

from typing import Any

from flantune.models.config import DecoderConfig, RopeScaling
from flantune.models.convert.errors import CheckpointError
from flantune.models.convert.specs import TensorSpec, layer_path, spec

ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM"}
_HF_TO_ACTIVATION = {"silu": "silu", "relu": "relu", "gelu": "gelu",
                     "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh"}
_ACTIVATION_TO_HF = {"silu": "silu", "relu": "relu", "gelu": "gelu",
                     "gelu_tanh": "gelu_pytorch_tanh"}


def _rope(hf: dict[str, Any]) -> tuple[float, RopeScaling | None]:
    params = dict(hf.get("rope_parameters") or {})
    legacy = hf.get("rope_scaling") or {}
    params = {**legacy, **params}
    theta = params.get("rope_theta", hf.get("rope_theta", 10000.0))
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type == "default":
        return float(theta), None
    if rope_type == "llama3":
        return float(theta), RopeScaling(
            factor=params["factor"], low_freq_factor=params["low_freq_factor"],
            high_freq_factor=params["high_freq_factor"],
            original_max_position_embeddings=params["original_max_position_embeddings"])
    raise CheckpointError(f"config.json: rope type {rope_type!r} is not supported; "
                          "supported: 'default', 'llama3'")


def config_from_hf(hf: dict[str, Any], family: str, *,
                   param_dtype: str = "float32") -> DecoderConfig:
    """DecoderConfig from a Hugging Face Llama or Mistral config.json dict."""
    for flag in ("attention_bias", "mlp_bias"):
        if hf.get(flag):
            raise CheckpointError(f"config.json: {flag}=true is not supported (flantune's "
                                  "decoder has bias-free projections)")
    act = hf.get("hidden_act", "silu")
    if act not in _HF_TO_ACTIVATION:
        raise CheckpointError(f"config.json: hidden_act={act!r} is not supported; "
                              f"use one of {sorted(_HF_TO_ACTIVATION)}")
    theta, scaling = _rope(hf)
    num_heads = hf["num_attention_heads"]
    eos = hf.get("eos_token_id", 2)
    return DecoderConfig(
        vocab_size=hf["vocab_size"], emb_dim=hf["hidden_size"], num_heads=num_heads,
        num_kv_heads=hf.get("num_key_value_heads") or num_heads,
        head_dim=hf.get("head_dim") or hf["hidden_size"] // num_heads,
        mlp_dim=hf["intermediate_size"], num_layers=hf["num_hidden_layers"],
        mlp_activation=_HF_TO_ACTIVATION[act], rope_theta=theta, rope_scaling=scaling,
        sliding_window=hf.get("sliding_window") if family == "mistral" else None,
        tie_word_embeddings=hf.get("tie_word_embeddings", False),
        rms_norm_epsilon=hf.get("rms_norm_eps", 1e-6),
        max_position_embeddings=hf.get("max_position_embeddings", 4096),
        bos_token_id=hf.get("bos_token_id", 1) or 0,
        eos_token_id=eos[0] if isinstance(eos, list) else eos,
        family=family, param_dtype=param_dtype)


def config_to_hf(config: DecoderConfig) -> dict[str, Any]:
    """A Hugging Face config.json dict for `config`."""
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": config.rope_theta}
    if config.rope_scaling is not None:
        s = config.rope_scaling
        rope.update(rope_type="llama3", factor=s.factor, low_freq_factor=s.low_freq_factor,
                    high_freq_factor=s.high_freq_factor,
                    original_max_position_embeddings=s.original_max_position_embeddings)
    if config.family == "llama" and config.sliding_window is not None:
        raise CheckpointError("a Llama checkpoint cannot carry sliding_window; "
                              "use family='mistral'")
    out = {
        "architectures": [ARCHITECTURES[config.family]], "model_type": config.family,
        "vocab_size": config.vocab_size, "hidden_size": config.emb_dim,
        "intermediate_size": config.mlp_dim, "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads, "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.head_dim, "hidden_act": _ACTIVATION_TO_HF[config.mlp_activation],
        "rms_norm_eps": config.rms_norm_epsilon, "rope_parameters": rope,
        "rope_theta": config.rope_theta,
        "max_position_embeddings": config.max_position_embeddings,
        "tie_word_embeddings": config.tie_word_embeddings,
        "bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id,
        "attention_bias": False, "mlp_bias": False,
    }
    if config.family == "mistral":
        out["sliding_window"] = config.sliding_window
    return out


def tensor_specs(config: DecoderConfig) -> list[TensorSpec]:
    """Every tensor of the checkpoint, in file order."""
    e, m = config.emb_dim, config.mlp_dim
    h, kvh, d = config.num_heads, config.num_kv_heads, config.head_dim
    out = [spec("model.embed_tokens.weight", (("token_embedder", "embedding"), None), "copy",
                (config.vocab_size, e))]
    for i in range(config.num_layers):
        def at(*rest: str, index: int = i) -> tuple[tuple, int | None]:
            return layer_path(("layers",), index, rest, config.scan_layers)

        hf = f"model.layers.{i}"
        out += [
            spec(f"{hf}.input_layernorm.weight", at("attention_norm", "scale"), "copy", (e,)),
            spec(f"{hf}.self_attn.q_proj.weight", at("attention", "query"), "heads_in", (e, h, d)),
            spec(f"{hf}.self_attn.k_proj.weight", at("attention", "key"), "heads_in", (e, kvh, d)),
            spec(f"{hf}.self_attn.v_proj.weight", at("attention", "value"), "heads_in",
                 (e, kvh, d)),
            spec(f"{hf}.self_attn.o_proj.weight", at("attention", "out"), "heads_out", (h, d, e)),
            spec(f"{hf}.post_attention_layernorm.weight", at("mlp_norm", "scale"), "copy", (e,)),
            spec(f"{hf}.mlp.gate_proj.weight", at("mlp", "wi_0", "kernel"), "linear", (e, m)),
            spec(f"{hf}.mlp.up_proj.weight", at("mlp", "wi_1", "kernel"), "linear", (e, m)),
            spec(f"{hf}.mlp.down_proj.weight", at("mlp", "wo", "kernel"), "linear", (m, e)),
        ]
    out.append(spec("model.norm.weight", (("final_norm", "scale"), None), "copy", (e,)))
    if not config.tie_word_embeddings:
        out.append(spec("lm_head.weight", (("logits_dense", "kernel"), None), "linear",
                        (e, config.vocab_size)))
    return out


def optional_tensors(config: DecoderConfig) -> dict[str, tuple[int, ...]]:
    """A tied checkpoint may still carry `lm_head.weight` as a copy: accepted and ignored."""
    if config.tie_word_embeddings:
        return {"lm_head.weight": (config.vocab_size, config.emb_dim)}
    return {}
