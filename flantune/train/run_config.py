"""What a training run's MODEL_DIR records about how its model was trained, read from the
`config.gin` that `flantune train` writes there: the model configuration, the task feature
lengths (an 'inputs' length makes a decoder-only model a prefix LM) and the vocabulary.

The file is read with gin's parser alone (gin's global configuration is left untouched), and
only unscoped bindings count, as for the unscoped `model_config()` call that built the model.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from gin import config_parser

from flantune.models.config import DecoderConfig, ModelConfig, RopeScaling, T5Config

CONFIG_FILES = ("config.gin", "operative_config.gin")
_CLASSES = {cls.__name__: cls for cls in (T5Config, DecoderConfig, RopeScaling)}


class RunConfigError(ValueError):
    """A MODEL_DIR whose gin config does not say how its model was trained."""


@dataclasses.dataclass(frozen=True)
class _Macro:
    name: str


@dataclasses.dataclass(frozen=True)
class _Reference:
    name: str
    evaluate: bool


class _Delegate(config_parser.ParserDelegate):
    def configurable_reference(self, scoped_configurable_name: str, evaluate: bool) -> _Reference:
        return _Reference(scoped_configurable_name, evaluate)

    def macro(self, macro_name: str) -> _Macro:
        return _Macro(macro_name)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The model a run trained, its feature lengths and its vocabulary (None: the demo
    vocabulary shipped with flantune, which `flantune train` uses unless configured)."""

    source: Path
    model: ModelConfig
    task_feature_lengths: dict[str, int] | None
    vocabulary_path: str | None
    extra_ids: int
    chat_template: str | None = None  # flantune.chat_template.name, when the run set it

    @property
    def prefix_lm(self) -> bool:
        """Whether a decoder-only model was trained as a prefix LM (bidirectional attention
        over the inputs), which flantune's feature converter does with an 'inputs' length."""
        return isinstance(self.model, DecoderConfig) and "inputs" in (
            self.task_feature_lengths or {})


def _short(selector: str) -> str:
    return selector.rsplit(".", 1)[-1]


class _Bindings:
    def __init__(self, text: str, source: Path):
        self.source = source
        self.macros: dict[str, Any] = {}
        self.params: dict[tuple[str, str], Any] = {}
        try:
            statements = list(config_parser.ConfigParser(text, _Delegate()))
        except SyntaxError as err:
            raise RunConfigError(f"{source}: not a gin config ({err})") from err
        for statement in statements:
            if not isinstance(statement, config_parser.BindingStatement) or statement.scope:
                continue
            if statement.arg_name:
                self.params[(_short(statement.selector), statement.arg_name)] = statement.value
            else:
                self.macros[statement.selector] = statement.value

    def resolve(self, value: Any, where: str, depth: int = 0) -> Any:
        if depth > 20:
            raise RunConfigError(f"{self.source}: {where}: macros refer to each other in a loop")
        if isinstance(value, _Macro):
            if value.name not in self.macros:
                raise RunConfigError(f"{self.source}: {where} uses macro %{value.name}, which "
                                     "is not bound there")
            return self.resolve(self.macros[value.name], where, depth + 1)
        if isinstance(value, _Reference):
            return self.build(value, where, depth + 1)
        if isinstance(value, dict):
            return {k: self.resolve(v, where, depth + 1) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.resolve(v, where, depth + 1) for v in value)
        return value

    def build(self, reference: _Reference, where: str, depth: int = 0) -> Any:
        name = _short(reference.name)
        if name not in _CLASSES or not reference.evaluate:
            raise RunConfigError(
                f"{self.source}: {where} = @{reference.name}{'()' if reference.evaluate else ''}"
                f" is not one of flantune's model configurations ({sorted(_CLASSES)}())")
        cls = _CLASSES[name]
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {arg: self.resolve(value, f"{name}.{arg}", depth)
                  for (selector, arg), value in self.params.items() if selector == name}
        unknown = sorted(set(kwargs) - fields)
        if unknown:
            raise RunConfigError(f"{self.source}: {name} has no parameter(s) {unknown}")
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as err:
            raise RunConfigError(f"{self.source}: {name}: {err}") from err

    def get(self, selector: str, arg: str, default: Any = None) -> Any:
        if (selector, arg) not in self.params:
            return default
        return self.resolve(self.params[(selector, arg)], f"{selector}.{arg}")


def read_run_config(model_dir: str | Path) -> RunConfig:
    """The RunConfig recorded in `model_dir`'s config.gin (or operative_config.gin)."""
    directory = Path(model_dir)
    for name in CONFIG_FILES:
        if (directory / name).is_file():
            source = directory / name
            break
    else:
        raise RunConfigError(
            f"MODEL_DIR {directory} has no {' or '.join(CONFIG_FILES)}, so it does not record "
            "the model configuration it was trained with (`flantune train` writes config.gin "
            "there)")
    bindings = _Bindings(source.read_text(encoding="utf-8"), source)
    model = bindings.params.get(("train_config", "model")) or bindings.params.get(
        ("model_config", "config"))
    if not isinstance(model, _Reference):
        raise RunConfigError(f"{source}: no model configuration (model_config.config = "
                             "@T5Config() or @DecoderConfig(), from a gin_configs/models file)")
    lengths = bindings.get("train_config", "task_feature_lengths")
    return RunConfig(
        source=source, model=bindings.build(model, "model_config.config"),
        task_feature_lengths=None if lengths is None else dict(lengths),
        vocabulary_path=bindings.get("vocabulary", "path"),
        extra_ids=int(bindings.get("vocabulary", "extra_ids", 0)),
        chat_template=bindings.get("chat_template", "name"))


__all__ = ["RunConfig", "RunConfigError", "read_run_config"]
