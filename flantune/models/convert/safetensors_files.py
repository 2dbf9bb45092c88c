"""Reading and writing (optionally sharded) safetensors checkpoints tensor by tensor.

A single file is `model.safetensors`; sharded checkpoints are `model-0000i-of-0000n.safetensors`
plus `model.safetensors.index.json` (`{"metadata": {"total_size": ...}, "weight_map": {...}}`),
the layout Hugging Face reads and writes.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import safetensors.numpy
from safetensors import safe_open

from flantune.models.convert.errors import CheckpointError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


@dataclasses.dataclass(frozen=True)
class StoredTensor:
    """Where a tensor lives and its stored shape and dtype (read from headers only)."""

    file: Path
    shape: tuple[int, ...]
    dtype: str


def list_tensors(directory: Path) -> dict[str, StoredTensor]:
    """Every tensor of the checkpoint in `directory`, from the file headers (no data read)."""
    index_path = directory / INDEX_FILE
    if index_path.exists():
        try:
            weight_map = json.loads(index_path.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as err:
            raise CheckpointError(f"{index_path}: not a safetensors index ({err}); it needs a "
                                  "'weight_map' of tensor name -> shard file") from err
        files = sorted({directory / name for name in weight_map.values()})
    elif (directory / SINGLE_FILE).exists():
        weight_map = None
        files = [directory / SINGLE_FILE]
    else:
        raise CheckpointError(f"{directory}: no {SINGLE_FILE} or {INDEX_FILE}; point at a "
                              "Hugging Face checkpoint directory")
    tensors: dict[str, StoredTensor] = {}
    for file in files:
        if not file.exists():
            raise CheckpointError(f"{index_path}: lists shard {file.name}, which does not exist")
        with safe_open(str(file), framework="numpy") as handle:
            for name in handle.keys():
                if name in tensors:
                    raise CheckpointError(f"tensor {name!r} is stored twice: in "
                                          f"{tensors[name].file.name} and {file.name}")
                info = handle.get_slice(name)
                tensors[name] = StoredTensor(file, tuple(info.get_shape()), info.get_dtype())
    if weight_map is not None:
        for name, shard in weight_map.items():
            if name not in tensors or tensors[name].file.name != shard:
                raise CheckpointError(f"{index_path}: maps tensor {name!r} to {shard}, but that "
                                      "shard does not hold it")
    return tensors


def read_tensors(stored: dict[str, StoredTensor],
                 names: list[str]) -> Iterator[tuple[str, np.ndarray]]:
    """Yields (name, array) for `names`, opening each shard once; one tensor in memory at a time
    besides what the caller keeps."""
    by_file: dict[Path, list[str]] = {}
    for name in names:
        by_file.setdefault(stored[name].file, []).append(name)
    for file, file_names in by_file.items():
        # The "flax" framework reads bfloat16, which plain numpy cannot; np.asarray then gives
        # an ml_dtypes array without a copy.
        with safe_open(str(file), framework="flax") as handle:
            for name in file_names:
                yield name, np.asarray(handle.get_tensor(name))


class ShardedWriter:
    """Accumulates tensors and writes a shard whenever the next tensor would exceed
    `max_shard_bytes`; `close` names the shards and writes the index (if more than one)."""

    def __init__(self, directory: Path, max_shard_bytes: int):
        self.directory = directory
        self.max_shard_bytes = max_shard_bytes
        self._pending: dict[str, np.ndarray] = {}
        self._pending_bytes = 0
        self._shards: list[tuple[Path, list[str]]] = []
        self._total = 0

    def add(self, name: str, array: np.ndarray) -> None:
        if self._pending and self._pending_bytes + array.nbytes > self.max_shard_bytes:
            self._flush()
        self._pending[name] = np.ascontiguousarray(array)
        self._pending_bytes += array.nbytes
        self._total += array.nbytes

    def _flush(self) -> None:
        path = self.directory / f".partial-{len(self._shards):05d}.safetensors"
        safetensors.numpy.save_file(self._pending, str(path), metadata={"format": "pt"})
        self._shards.append((path, list(self._pending)))
        self._pending, self._pending_bytes = {}, 0

    def close(self) -> list[Path]:
        if self._pending or not self._shards:
            self._flush()
        if len(self._shards) == 1:
            final = self.directory / SINGLE_FILE
            os.replace(self._shards[0][0], final)
            return [final]
        count = len(self._shards)
        weight_map: dict[str, str] = {}
        finals = []
        for i, (path, names) in enumerate(self._shards):
            final = self.directory / f"model-{i + 1:05d}-of-{count:05d}.safetensors"
            os.replace(path, final)
            finals.append(final)
            weight_map.update({name: final.name for name in names})
        index = {"metadata": {"total_size": self._total}, "weight_map": weight_map}
        (self.directory / INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True))
        return finals
