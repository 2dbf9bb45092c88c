"""Which projection kernels an adapter adapts: every projection of a model, named both the
flantune way (its parameter path) and the Hugging Face way (its module name), and the
selection `target_modules` makes among them.

The projections come from the Hugging Face conversion's tensor table, so an adapter's
Hugging Face key names are the converter's by construction.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence

from flantune.models.config import ModelConfig, T5Config
from flantune.models.convert.checkpoint import tensor_specs
from flantune.models.convert.specs import TensorSpec
from flantune.peft.config import TARGET_PRESETS

# peft's defaults (its TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING).
DEFAULT_TARGETS = {"t5": ("q", "v"), "llama": ("q_proj", "v_proj"),
                   "mistral": ("q_proj", "v_proj")}
_ATTENTION_PARAMS = ("query", "key", "value", "out")
_OUTPUT_HEAD = "lm_head"


class TargetError(ValueError):
    """`target_modules` selects nothing, or names something the model does not have."""


@dataclasses.dataclass(frozen=True)
class Projection:
    """One projection kernel of one layer.

    `owner` is the parameter path of the module holding the kernel (with `scan_layers` the
    path of the stacked layer module, `layer` the index into its leading axis) and `param` the
    kernel's attribute name; `in_shape` / `out_shape` split the per-layer kernel shape into
    the input and output dimensions (HF: [prod(out_shape), prod(in_shape)])."""

    name: str
    hf_module: str
    owner: tuple
    param: str
    layer: int | None
    layout: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]

    @property
    def in_features(self) -> int:
        return math.prod(self.in_shape)

    @property
    def out_features(self) -> int:
        return math.prod(self.out_shape)

    @property
    def is_attention(self) -> bool:
        return self.param in _ATTENTION_PARAMS

    @property
    def is_output_head(self) -> bool:
        return self.hf_module == _OUTPUT_HEAD


def _split_shape(spec: TensorSpec) -> tuple[tuple[int, ...], tuple[int, ...]]:
    shape = spec.param_shape
    if spec.layout == "heads_out":
        return shape[:2], shape[2:]
    return shape[:1], shape[1:]


def _unscanned(config: ModelConfig) -> ModelConfig:
    return dataclasses.replace(config, scan_layers=False)


def projections(config: ModelConfig) -> list[Projection]:
    """Every projection of the model (Hugging Face file order); embeddings, norms and the
    relative position bias are not projections."""
    named = [s for s in tensor_specs(_unscanned(config)) if s.layout != "copy"]
    placed = [s for s in tensor_specs(config) if s.layout != "copy"]
    out = []
    for by_name, spec in zip(named, placed, strict=True):
        path = tuple(by_name.path)
        name_path = path[:-1] if path[-1] == "kernel" else path
        in_shape, out_shape = _split_shape(spec)
        out.append(Projection(
            name="/".join(str(p) for p in name_path),
            hf_module=spec.hf_name.removesuffix(".weight"), owner=tuple(spec.path[:-1]),
            param=str(spec.path[-1]), layer=spec.layer, layout=spec.layout,
            in_shape=in_shape, out_shape=out_shape))
    return out


def family(config: ModelConfig) -> str:
    return "t5" if isinstance(config, T5Config) else config.family


def _matches_suffix(target: str, projection: Projection) -> bool:
    ours = projection.name
    return _hf_suffix(target, projection) or ours == target or ours.endswith("/" + target)


def _matches_regex(pattern: re.Pattern, projection: Projection) -> bool:
    return bool(pattern.fullmatch(projection.hf_module) or pattern.fullmatch(projection.name))


def select(config: ModelConfig, target_modules: Sequence[str] | str | None) -> list[Projection]:
    """The projections `target_modules` (see LoraConfig) selects; a name or pattern that
    selects nothing is an error listing what the model has."""
    every = projections(config)
    if target_modules is None:
        target_modules = DEFAULT_TARGETS[family(config)]
    if target_modules == "all-linear":
        chosen = [p for p in every if not p.is_output_head]
    elif target_modules == "all-attention":
        chosen = [p for p in every if p.is_attention]
    elif isinstance(target_modules, str):
        try:
            pattern = re.compile(target_modules)
        except re.error as err:
            raise TargetError(f"target_modules={target_modules!r} is not a valid regular "
                              f"expression ({err}); or use a list of names or one of "
                              f"{TARGET_PRESETS}.") from None
        chosen = [p for p in every if _matches_regex(pattern, p)]
        if not chosen:
            raise TargetError(f"target_modules={target_modules!r} (a regular expression, "
                              "matched against whole names) matches no projection; "
                              + _available(every))
    else:
        chosen = []
        for target in target_modules:
            found = [p for p in every if _matches_suffix(target, p)]
            if not found:
                raise TargetError(f"target_modules entry {target!r} matches no projection; "
                                  + _available(every))
            chosen += found
        chosen = [p for p in every if p in set(chosen)]
    _check_scanned(config, chosen, every)
    return chosen


def _available(every: list[Projection]) -> str:
    ours = sorted({p.name.rsplit("/", 1)[-1] for p in every})
    hf = sorted({p.hf_module.rsplit(".", 1)[-1] for p in every})
    return (f"the model's projections are named {ours} (flantune) or {hf} (Hugging Face), "
            f"e.g. {every[0].name!r} / {every[0].hf_module!r}; presets: {list(TARGET_PRESETS)}.")


def _check_scanned(config: ModelConfig, chosen: list[Projection],
                   every: list[Projection]) -> None:
    """With scan_layers a kernel is one array over all layers: adapt all of them or none."""
    if not config.scan_layers:
        return
    picked: dict[tuple, int] = {}
    total: dict[tuple, int] = {}
    for p in every:
        total[(p.owner, p.param)] = total.get((p.owner, p.param), 0) + 1
    for p in chosen:
        picked[(p.owner, p.param)] = picked.get((p.owner, p.param), 0) + 1
    partial = [f"{'/'.join(map(str, owner))}/{param} ({count} of {total[(owner, param)]} "
               "layers)" for (owner, param), count in picked.items()
               if count != total[(owner, param)]]
    if partial:
        raise TargetError("with scan_layers=True every layer of a stack is adapted alike, but "
                          f"target_modules selects only some layers of {partial}; widen the "
                          "selection or set scan_layers=False.")


def hf_target_modules(config: ModelConfig, chosen: list[Projection]) -> list[str]:
    """peft's `target_modules` for the chosen projections: their short Hugging Face names when
    those select exactly the same modules, else their full module names."""
    every = projections(config)
    short = sorted({p.hf_module.rsplit(".", 1)[-1] for p in chosen})
    if {p.hf_module for p in every if any(_hf_suffix(t, p) for t in short)} == \
            {p.hf_module for p in chosen}:
        return short
    return sorted(p.hf_module for p in chosen)


def _hf_suffix(target: str, projection: Projection) -> bool:
    return projection.hf_module == target or projection.hf_module.endswith("." + target)
