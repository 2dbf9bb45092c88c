"""T5 v1.0 / v1.1 / Flan-T5 in Hugging Face's `T5ForConditionalGeneration` layout."""

from __future__ import annotations

from typing import Any

from flantune.models.config import T5Config
from flantune.models.convert.errors import CheckpointError
from flantune.models.convert.specs import TensorSpec, layer_path, spec

ARCHITECTURE = "T5ForConditionalGeneration"

# Hugging Face activation names -> flantune activation names. HF's "gated-gelu" means the tanh
# approximation while a plain "gelu" is exact.
_HF_TO_ACTIVATION = {"relu": "relu", "gelu": "gelu", "gelu_new": "gelu_tanh",
                     "gelu_pytorch_tanh": "gelu_tanh", "silu": "silu"}
_ACTIVATION_TO_HF = {"relu": "relu", "gelu": "gelu", "gelu_tanh": "gelu_new", "silu": "silu"}


def config_from_hf(hf: dict[str, Any], *, param_dtype: str = "float32") -> T5Config:
    """T5Config from a Hugging Face T5 config.json dict."""
    proj = hf.get("feed_forward_proj", "relu")
    parts = proj.split("-")
    gated = len(parts) == 2 and parts[0] == "gated"
    act_name = "gelu_new" if proj == "gated-gelu" else parts[-1]
    if len(parts) > 2 or (len(parts) == 2 and not gated) or act_name not in _HF_TO_ACTIVATION:
        raise CheckpointError(f"config.json: feed_forward_proj={proj!r} is not supported; use "
                              f"'relu', 'gated-gelu' or '[gated-]<{'|'.join(_HF_TO_ACTIVATION)}>'")
    num_layers = hf["num_layers"]
    # transformers >= 5 always writes tie_word_embeddings=true for T5 and records the v1.0
    # output scaling (which goes with the tied head) as scale_decoder_outputs instead.
    tied = hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True))
    return T5Config(
        vocab_size=hf["vocab_size"], emb_dim=hf["d_model"], num_heads=hf["num_heads"],
        head_dim=hf["d_kv"], mlp_dim=hf["d_ff"], num_encoder_layers=num_layers,
        num_decoder_layers=hf.get("num_decoder_layers") or num_layers,
        mlp_activation=_HF_TO_ACTIVATION[act_name], gated_mlp=gated,
        tie_word_embeddings=bool(tied),
        relative_attention_num_buckets=hf.get("relative_attention_num_buckets", 32),
        relative_attention_max_distance=hf.get("relative_attention_max_distance", 128),
        layer_norm_epsilon=hf.get("layer_norm_epsilon", 1e-6),
        dropout_rate=hf.get("dropout_rate", 0.1), param_dtype=param_dtype)


def config_to_hf(config: T5Config) -> dict[str, Any]:
    """A Hugging Face T5 config.json dict for `config`."""
    act = _ACTIVATION_TO_HF[config.mlp_activation]
    if config.gated_mlp and config.mlp_activation == "gelu_tanh":
        act = "gelu"  # "gated-gelu" is HF's name for the tanh-approximated gated GELU.
    elif config.gated_mlp and config.mlp_activation == "gelu":
        raise CheckpointError("a gated MLP with exact GELU has no Hugging Face T5 equivalent "
                              "(HF's gated-gelu is the tanh approximation)")
    return {
        "architectures": [ARCHITECTURE], "model_type": "t5",
        "vocab_size": config.vocab_size, "d_model": config.emb_dim, "d_kv": config.head_dim,
        "d_ff": config.mlp_dim, "num_layers": config.num_encoder_layers,
        "num_decoder_layers": config.num_decoder_layers, "num_heads": config.num_heads,
        "relative_attention_num_buckets": config.relative_attention_num_buckets,
        "relative_attention_max_distance": config.relative_attention_max_distance,
        "layer_norm_epsilon": config.layer_norm_epsilon,
        "feed_forward_proj": f"gated-{act}" if config.gated_mlp else act,
        "tie_word_embeddings": config.tie_word_embeddings,
        "dropout_rate": config.dropout_rate, "is_encoder_decoder": True,
        "decoder_start_token_id": 0, "pad_token_id": 0, "eos_token_id": 1,
    }


def _attention_specs(hf_prefix: str, path: tuple, index: int, config: T5Config) -> list[TensorSpec]:
    e, h, d = config.emb_dim, config.num_heads, config.head_dim
    scanned = config.scan_layers
    out = []
    for hf_key, key in (("q", "query"), ("k", "key"), ("v", "value")):
        out.append(spec(f"{hf_prefix}.{hf_key}.weight", layer_path(path[:-1], index,
                                                                   (path[-1], key), scanned),
                        "heads_in", (e, h, d)))
    out.append(spec(f"{hf_prefix}.o.weight", layer_path(path[:-1], index, (path[-1], "out"),
                                                        scanned), "heads_out", (h, d, e)))
    return out


def _layer_specs(stack: str, index: int, config: T5Config) -> list[TensorSpec]:
    e, m = config.emb_dim, config.mlp_dim
    scanned = config.scan_layers
    prefix = (stack, "layers")
    hf = f"{stack}.block.{index}.layer"

    def norm(hf_name: str, name: str) -> TensorSpec:
        return spec(hf_name, layer_path(prefix, index, (name, "scale"), scanned), "copy", (e,))

    if stack == "encoder":
        sublayers = [("SelfAttention", "attention", 0)]
        mlp_at = 1
    else:
        sublayers = [("SelfAttention", "self_attention", 0), ("EncDecAttention",
                                                              "cross_attention", 1)]
        mlp_at = 2
    out: list[TensorSpec] = []
    for hf_name, name, position in sublayers:
        out += _attention_specs(f"{hf}.{position}.{hf_name}", (*prefix, name), index, config)
        out.append(norm(f"{hf}.{position}.layer_norm.weight", f"{name}_norm"))
    mlp_names = [("wi_0", "wi_0", (e, m)), ("wi_1", "wi_1", (e, m))] if config.gated_mlp \
        else [("wi", "wi", (e, m))]
    for hf_name, name, shape in [*mlp_names, ("wo", "wo", (m, e))]:
        out.append(spec(f"{hf}.{mlp_at}.DenseReluDense.{hf_name}.weight",
                        layer_path(prefix, index, ("mlp", name, "kernel"), scanned),
                        "linear", shape))
    out.append(norm(f"{hf}.{mlp_at}.layer_norm.weight", "mlp_norm"))
    return out


def tensor_specs(config: T5Config) -> list[TensorSpec]:
    """Every tensor of the checkpoint, in file order."""
    out = [spec("shared.weight", (("token_embedder", "embedding"), None), "copy",
                (config.vocab_size, config.emb_dim))]
    for stack, count in (("encoder", config.num_encoder_layers),
                         ("decoder", config.num_decoder_layers)):
        out.append(spec(f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                        ((stack, "relpos_bias", "embedding"), None), "copy",
                        (config.relative_attention_num_buckets, config.num_heads)))
        for index in range(count):
            out += _layer_specs(stack, index, config)
        out.append(spec(f"{stack}.final_layer_norm.weight", ((stack, "final_norm", "scale"), None),
                        "copy", (config.emb_dim,)))
    if not config.tie_word_embeddings:
        out.append(spec("lm_head.weight", (("logits_dense", "kernel"), None), "linear",
                        (config.emb_dim, config.vocab_size)))
    return out


def optional_tensors(config: T5Config) -> dict[str, tuple[int, ...]]:
    """Tensors some writers add as copies of tied ones: accepted when shaped right, ignored."""
    table = (config.vocab_size, config.emb_dim)
    names = ["encoder.embed_tokens.weight", "decoder.embed_tokens.weight"]
    if config.tie_word_embeddings:
        names.append("lm_head.weight")
    return {name: table for name in names}
