"""Adapter configurations: plain frozen dataclasses, as the model configurations are."""

from __future__ import annotations

import dataclasses
from typing import Any

# Names `target_modules` may take instead of a list (peft's "all-linear" and flantune's
# "all-attention"); None means the family's default, as peft's (q and v).
TARGET_PRESETS = ("all-linear", "all-attention")


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """LoRA (Hu et al. 2021) on projection kernels, as peft's `LoraConfig`.

    `target_modules`: None (q and v projections, peft's default for T5 and Llama/Mistral), a
    preset name from TARGET_PRESETS, a tuple of names each matched as the last part(s) of a
    projection's flantune name (`query`, `mlp/wi_0`) or Hugging Face module name (`q`,
    `q_proj`, `DenseReluDense.wi_0`), or one string read as a regular expression that must
    match a whole name of either kind. The delta of a kernel W is `scale * A @ B` with
    scale = alpha / r (rsLoRA: alpha / sqrt(r)); A starts Kaiming-uniform, B at zero, so an
    adapted model equals its base until it trains. `dropout` applies to the adapter's input.
    """

    r: int = 8
    alpha: float = 8.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] | str | None = None
    use_rslora: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.target_modules, list):
            object.__setattr__(self, "target_modules", tuple(self.target_modules))
        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r < 1:
            raise ValueError(f"LoraConfig.r={self.r!r} must be a positive integer (the rank).")
        if not self.alpha > 0:
            raise ValueError(f"LoraConfig.alpha={self.alpha!r} must be positive.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoraConfig.dropout={self.dropout!r} must be in [0, 1).")
        targets = self.target_modules
        if isinstance(targets, tuple):
            if not targets or not all(isinstance(t, str) and t for t in targets):
                raise ValueError(f"LoraConfig.target_modules={targets!r} must be non-empty "
                                 "names, one string (a regular expression or a preset "
                                 f"{TARGET_PRESETS}) or None (q and v).")
        elif targets is not None and not isinstance(targets, str):
            raise ValueError(f"LoraConfig.target_modules={targets!r} must be a list of names, "
                             "a string or None.")

    @property
    def scale(self) -> float:
        """The factor on A @ B: alpha / r, or alpha / sqrt(r) with rsLoRA."""
        return self.alpha / (self.r ** 0.5 if self.use_rslora else self.r)

    @property
    def kind(self) -> str:
        return "lora"


@dataclasses.dataclass(frozen=True)
class PrefixConfig:
    """peft's PrefixTuningConfig: `num_virtual_tokens` prefix slots per layer; with
    `projection`, the prefixes come from an MLP of hidden width `projection_hidden` (default:
    the token width) during training, folded into the table on export. `t5_encoder` (T5 only,
    flantune's extension) prefixes the encoder's self-attention too, which peft does not: such
    an adapter has no peft export."""

    num_virtual_tokens: int = 20
    projection: bool = False
    projection_hidden: int | None = None
    t5_encoder: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.num_virtual_tokens, int) or self.num_virtual_tokens < 1:
            raise ValueError(f"PrefixConfig.num_virtual_tokens={self.num_virtual_tokens!r} must "
                             "be a positive integer.")
        if self.projection_hidden is not None and self.projection_hidden < 1:
            raise ValueError(f"PrefixConfig.projection_hidden={self.projection_hidden!r} must "
                             "be positive or None.")

    @property
    def kind(self) -> str:
        return "prefix"


@dataclasses.dataclass(frozen=True)
class PromptConfig:
    """Prompt tuning (Lester et al. 2021) as peft's PromptTuningConfig: `num_virtual_tokens`
    trainable embeddings before the inputs (T5: the encoder's; Llama / Mistral: the sequence's),
    initialised N(0, 1) as peft's default (RANDOM)."""

    num_virtual_tokens: int = 20

    def __post_init__(self) -> None:
        if not isinstance(self.num_virtual_tokens, int) or self.num_virtual_tokens < 1:
            raise ValueError(f"PromptConfig.num_virtual_tokens={self.num_virtual_tokens!r} must "
                             "be a positive integer.")

    @property
    def kind(self) -> str:
        return "prompt"


AdapterConfig = LoraConfig | PrefixConfig | PromptConfig

_CLASSES = {cls.__name__: cls for cls in (LoraConfig, PrefixConfig, PromptConfig)}


def adapter_to_dict(config: AdapterConfig) -> dict[str, Any]:
    """A JSON-ready dict naming the adapter class and its fields."""
    fields = dataclasses.asdict(config)
    if isinstance(fields.get("target_modules"), tuple):
        fields["target_modules"] = list(fields["target_modules"])
    return {"class": type(config).__name__, "fields": fields}


def adapter_from_dict(data: dict[str, Any]) -> AdapterConfig:
    """Inverse of `adapter_to_dict`."""
    name = data.get("class")
    if name not in _CLASSES:
        raise ValueError(f"unknown adapter class {name!r}; expected one of {sorted(_CLASSES)}")
    fields = dict(data.get("fields", {}))
    known = {f.name for f in dataclasses.fields(_CLASSES[name])}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"{name} has no field(s) {unknown}")
    return _CLASSES[name](**fields)
