"""flantune's own parameter checkpoint: `config.json` (the configuration dataclass) and an
Orbax checkpoint of the parameter tree under `params/`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx

from flantune.models.build import build_model, model_params
from flantune.models.config import ModelConfig, config_from_dict, config_to_dict
from flantune.models.convert.errors import CheckpointError

CONFIG_FILE = "config.json"
PARAMS_DIR = "params"


def save_params(config: ModelConfig, params: dict[str, Any], path: str | Path) -> Path:
    """Writes `config` and `params` to the directory `path` (created; must not hold params)."""
    directory = Path(path).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(directory / PARAMS_DIR, params)
    checkpointer.wait_until_finished()
    (directory / CONFIG_FILE).write_text(json.dumps(config_to_dict(config), indent=2))
    return directory


def load_params(path: str | Path) -> tuple[ModelConfig, dict[str, Any]]:
    """Reads what `save_params` wrote; shapes and dtypes are checked against the config."""
    directory = Path(path).absolute()
    try:
        config = config_from_dict(json.loads((directory / CONFIG_FILE).read_text()))
    except FileNotFoundError as err:
        raise CheckpointError(f"{directory}: no {CONFIG_FILE}; not a flantune parameter "
                              "checkpoint") from err
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{directory / CONFIG_FILE}: {err}") from err
    abstract = nnx.eval_shape(lambda: build_model(config))
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), model_params(abstract))
    try:
        params = ocp.StandardCheckpointer().restore(directory / PARAMS_DIR, target)
    except (ValueError, KeyError, FileNotFoundError) as err:
        raise CheckpointError(f"{directory / PARAMS_DIR}: does not match {CONFIG_FILE}: "
                              f"{err}") from err
    return config, params
