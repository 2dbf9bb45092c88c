"""Model configurations: plain frozen dataclasses (gin registration lives in `gin_registry`).

They are hashable so a model's configuration can be a static attribute of a module.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from flantune.models.attention import ATTENTION_KERNELS

ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "silu")


def _check_choice(owner: str, field: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{owner}.{field}={value!r} is not supported; choose one of {choices}.")


def _check_rate(owner: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{owner}.dropout_rate={value!r} must be in [0, 1) "
                         "(t5x's DROPOUT_RATE; 0 turns dropout off).")


def _check_dtype(owner: str, field: str, value: str) -> None:
    try:
        jnp.dtype(value)
    except TypeError as err:
        raise ValueError(
            f"{owner}.{field}={value!r} is not a dtype name (e.g. 'float32')."
        ) from err


@dataclasses.dataclass(frozen=True)
class T5Config:
    """Encoder-decoder T5. Defaults are T5 v1.1 small; v1.0 is `gated_mlp=False`,
    `mlp_activation='relu'`, `tie_word_embeddings=True` (logits scaled by emb_dim ** -0.5)."""

    vocab_size: int = 32128
    emb_dim: int = 512
    num_heads: int = 6
    head_dim: int = 64
    mlp_dim: int = 1024
    num_encoder_layers: int = 8
    num_decoder_layers: int = 8
    mlp_activation: str = "gelu_tanh"
    gated_mlp: bool = True
    tie_word_embeddings: bool = False
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    dropout_rate: float = 0.0
    param_dtype: str = "float32"
    dtype: str = "float32"
    remat: bool = False
    scan_layers: bool = False
    # 'auto': 'blocked' on a single CPU device, else 'xla' (see flantune.models.attention).
    attention_kernel: str = "auto"

    def __post_init__(self) -> None:
        _check_choice("T5Config", "mlp_activation", self.mlp_activation, ACTIVATIONS)
        _check_choice("T5Config", "attention_kernel", self.attention_kernel, ATTENTION_KERNELS)
        _check_rate("T5Config", self.dropout_rate)
        _check_dtype("T5Config", "param_dtype", self.param_dtype)
        _check_dtype("T5Config", "dtype", self.dtype)


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """Llama 3 style frequency-dependent RoPE scaling (Hugging Face `rope_type='llama3'`)."""

    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """Decoder-only Llama / Mistral family. Defaults are Llama-2 7B."""

    vocab_size: int = 32000
    emb_dim: int = 4096
    num_heads: int = 32
    num_kv_heads: int = 32
    head_dim: int = 128
    mlp_dim: int = 11008
    num_layers: int = 32
    mlp_activation: str = "silu"
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    sliding_window: int | None = None
    tie_word_embeddings: bool = False
    rms_norm_epsilon: float = 1e-5
    max_position_embeddings: int = 4096
    dropout_rate: float = 0.0
    bos_token_id: int = 1
    eos_token_id: int = 2
    family: str = "llama"
    param_dtype: str = "float32"
    dtype: str = "float32"
    remat: bool = False
    scan_layers: bool = False
    # 'auto': 'blocked' on a single CPU device, else 'xla' (see flantune.models.attention).
    attention_kernel: str = "auto"

    def __post_init__(self) -> None:
        _check_choice("DecoderConfig", "mlp_activation", self.mlp_activation, ACTIVATIONS)
        _check_choice("DecoderConfig", "attention_kernel", self.attention_kernel,
                      ATTENTION_KERNELS)
        _check_choice("DecoderConfig", "family", self.family, ("llama", "mistral"))
        _check_rate("DecoderConfig", self.dropout_rate)
        _check_dtype("DecoderConfig", "param_dtype", self.param_dtype)
        _check_dtype("DecoderConfig", "dtype", self.dtype)
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"DecoderConfig.num_heads={self.num_heads} must be a multiple of "
                f"num_kv_heads={self.num_kv_heads} (grouped-query attention)."
            )
        if self.head_dim % 2:
            raise ValueError(f"DecoderConfig.head_dim={self.head_dim} must be even for RoPE.")
        if self.sliding_window is not None and self.sliding_window < 1:
            raise ValueError(
                f"DecoderConfig.sliding_window={self.sliding_window} must be >= 1 or None."
            )


ModelConfig = T5Config | DecoderConfig


_CONFIG_CLASSES = {cls.__name__: cls for cls in (T5Config, DecoderConfig)}


def config_to_dict(config: ModelConfig) -> dict:
    """A JSON-ready dict naming the configuration class and its fields."""
    return {"class": type(config).__name__, "fields": dataclasses.asdict(config)}


def config_from_dict(data: dict) -> ModelConfig:
    """Inverse of `config_to_dict`."""
    name = data.get("class")
    if name not in _CONFIG_CLASSES:
        raise ValueError(f"unknown model configuration class {name!r}; "
                         f"expected one of {sorted(_CONFIG_CLASSES)}")
    fields = dict(data.get("fields", {}))
    known = {f.name for f in dataclasses.fields(_CONFIG_CLASSES[name])}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"{name} has no field(s) {unknown}")
    if fields.get("rope_scaling") is not None:
        fields["rope_scaling"] = RopeScaling(**fields["rope_scaling"])
    return _CONFIG_CLASSES[name](**fields)
