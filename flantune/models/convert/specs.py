"""How one Hugging Face tensor corresponds to one flantune parameter (or one layer's slice of a
parameter stacked over layers)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

# Layouts: "copy" (same array), "linear" (HF [out, in] <-> kernel [in, out]),
# "heads_in" (HF [heads * kv, embed] <-> kernel [embed, heads, kv]),
# "heads_out" (HF [embed, heads * kv] <-> kernel [heads, kv, embed]).
LAYOUTS = ("copy", "linear", "heads_in", "heads_out")


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """`hf_name` of shape `hf_shape` <-> params[path] (or params[path][layer] when stacked)."""

    hf_name: str
    hf_shape: tuple[int, ...]
    path: tuple[Any, ...]
    layout: str
    param_shape: tuple[int, ...]
    layer: int | None = None

    def to_param(self, hf: np.ndarray) -> np.ndarray:
        if self.layout == "copy":
            return hf
        return np.ascontiguousarray(hf.T).reshape(self.param_shape)

    def to_hf(self, param: np.ndarray) -> np.ndarray:
        if self.layout == "copy":
            return param
        if self.layout == "heads_out":
            matrix = param.reshape(-1, param.shape[-1])
        else:
            matrix = param.reshape(param.shape[0], -1)
        return np.ascontiguousarray(matrix.T)


def layer_path(prefix: tuple[Any, ...], index: int, rest: tuple[Any, ...],
               scanned: bool) -> tuple[tuple[Any, ...], int | None]:
    """Path of a layer parameter: `prefix/layers/<index>/rest`, or, when layers are scanned
    (stacked on a leading axis), `prefix/layers/rest` and the index into that axis."""
    if scanned:
        return (*prefix, "layers", *rest), index
    return (*prefix, "layers", index, *rest), None


def spec(hf_name: str, path_and_layer: tuple[tuple[Any, ...], int | None], layout: str,
         param_shape: tuple[int, ...]) -> TensorSpec:
    """A TensorSpec whose HF shape follows from the parameter shape and layout."""
    if layout == "copy":
        hf_shape = param_shape
    elif layout == "linear":
        hf_shape = (param_shape[1], param_shape[0])
    elif layout == "heads_in":
        hf_shape = (param_shape[1] * param_shape[2], param_shape[0])
    elif layout == "heads_out":
        hf_shape = (param_shape[2], param_shape[0] * param_shape[1])
    else:
        raise ValueError(f"unknown tensor layout {layout!r}; expected one of {LAYOUTS}")
    path, layer = path_and_layer
    return TensorSpec(hf_name, tuple(hf_shape), path, layout, tuple(param_shape), layer)
