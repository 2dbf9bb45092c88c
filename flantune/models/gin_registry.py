"""Gin registration of the model configurations, for `gin_configs/models/*.gin`.

The dataclasses themselves stay gin-free (building one in Python never picks up gin bindings);
gin gets wrapped copies under the names `T5Config`, `DecoderConfig`, `RopeScaling` and the
selector `model_config`, whose `config` parameter each model file binds:

    import flantune.models.gin_registry
    model_config.config = @T5Config()
    T5Config.emb_dim = 512

Files `include` each other by repository-relative paths ('gin_configs/models/...'), as t5x does:
parse them from the repository root or add it with `gin.add_config_file_search_path`.
"""

from __future__ import annotations

import dataclasses

import gin

from flantune.models.config import DecoderConfig, ModelConfig, RopeScaling, T5Config

MODULE = "flantune.models"

for _cls in (T5Config, DecoderConfig, RopeScaling):
    gin.external_configurable(_cls, module=MODULE)


def _plain(value):
    """gin builds instances of a wrapping subclass; rebuild them as the plain dataclass so they
    compare equal to configurations built in Python."""
    for cls in (T5Config, DecoderConfig, RopeScaling):
        if isinstance(value, cls):
            fields = {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(cls)}
            return cls(**fields)
    return value


@gin.configurable(module=MODULE)
def model_config(config: ModelConfig = gin.REQUIRED) -> ModelConfig:
    """The model configuration a gin model file selects."""
    return _plain(config)


def parse_model_config(path: str) -> ModelConfig:
    """Adds a gin model file's bindings to gin's global configuration and returns the model
    configuration it selects."""
    gin.parse_config_file(path)
    return model_config()
