"""Which kind of checkpoint a path holds, decided in one place for every command that takes one:
train's INITIAL_CHECKPOINT_PATH, eval's CHECKPOINT_PATH and `flantune convert flantune-to-hf`.

Kinds: a training run's MODEL_DIR (its newest step), one step directory of a run, a flantune
parameter checkpoint (what `flantune convert hf-to-flantune` writes) and a Hugging Face
checkpoint directory.
"""

from __future__ import annotations

import dataclasses
import os

import orbax.checkpoint as ocp
from etils import epath

from flantune.models.convert.native import CONFIG_FILE as PARAMS_CONFIG_FILE
from flantune.models.convert.native import PARAMS_DIR

MODEL_DIR = "model_dir"
STEP = "step"
PARAMS = "params"
HUGGING_FACE = "hugging_face"

# The state item of a step directory (flantune.train.checkpoints saves it under this name).
STATE_ITEM = "state"

ACCEPTED = (
    "a training run's MODEL_DIR (step directories N/ with a 'state' item; the newest step is "
    "used), a step directory MODEL_DIR/N, a flantune parameter checkpoint (config.json + "
    "params/, as `flantune convert hf-to-flantune` writes) or a Hugging Face checkpoint "
    "(config.json + *.safetensors)")
_LISTED_ENTRIES = 8


class CheckpointKindError(RuntimeError):
    """A path that is no checkpoint flantune reads; the message names it and the kinds."""


@dataclasses.dataclass(frozen=True)
class CheckpointLocation:
    """A checkpoint found at `path`: its `kind` and, for training checkpoints, the train state
    item, its step and the run's MODEL_DIR."""

    kind: str
    path: epath.Path
    state_path: epath.Path | None = None
    step: int | None = None
    run_dir: epath.Path | None = None


def absolute_path(path: str | os.PathLike) -> epath.Path:
    """`path` as orbax needs it: local paths made absolute (orbax refuses relative ones, e.g.
    MODEL_DIR='runs/demo'), remote ones (gs://...) unchanged."""
    text = os.fspath(path)
    return epath.Path(text if "://" in text else os.path.abspath(text))


def _step_number(directory: epath.Path) -> int | None:
    return int(directory.name) if directory.name.isdigit() else None


def _contents(directory: epath.Path) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in directory.iterdir())
    if not names:
        return "it is empty"
    more = len(names) - _LISTED_ENTRIES
    return "it holds " + ", ".join(names[:_LISTED_ENTRIES]) + (f" and {more} more"
                                                                if more > 0 else "")


def locate_checkpoint(path: str | os.PathLike, role: str = "checkpoint") -> CheckpointLocation:
    """The kind of checkpoint at `path`; raises CheckpointKindError naming `role` (e.g.
    'INITIAL_CHECKPOINT_PATH'), the path and the accepted kinds when it is none of them, or
    when a remote path (gs://, s3://) cannot be reached."""
    try:
        return _locate(path, role)
    except CheckpointKindError:
        raise
    except Exception as err:  # noqa: BLE001 - remote file systems raise their own error types
        if "://" not in os.fspath(path):
            raise
        first = (str(err).strip().splitlines() or [""])[0]
        raise CheckpointKindError(
            f"{role} {os.fspath(path)} cannot be read ({type(err).__name__}: {first}). Without "
            f"network access or credentials for it, copy the checkpoint to a local directory "
            f"and point {role} there.") from None


def _locate(path: str | os.PathLike, role: str) -> CheckpointLocation:
    directory = absolute_path(path)
    if not directory.exists():
        raise CheckpointKindError(f"{role} {directory} does not exist; it must be {ACCEPTED}.")
    if not directory.is_dir():
        raise CheckpointKindError(f"{role} {directory} is a file, not a checkpoint directory; "
                                  f"it must be {ACCEPTED}.")
    has_config = (directory / PARAMS_CONFIG_FILE).exists()
    if has_config and (directory / PARAMS_DIR).is_dir():
        return CheckpointLocation(PARAMS, directory)
    if has_config and any(directory.glob("*.safetensors")):
        return CheckpointLocation(HUGGING_FACE, directory)
    if (directory / STATE_ITEM).is_dir():
        return CheckpointLocation(STEP, directory, directory / STATE_ITEM,
                                  _step_number(directory), directory.parent)
    steps = ocp.step.checkpoint_steps(directory)
    if steps:
        step_dir = ocp.step.standard_name_format().find_step(directory, max(steps)).path
        if not (step_dir / STATE_ITEM).is_dir():
            raise CheckpointKindError(
                f"{role} {directory}: its newest step {step_dir} has no '{STATE_ITEM}' item, so "
                "it is no flantune training checkpoint; point it at a step that has one.")
        return CheckpointLocation(MODEL_DIR, directory, step_dir / STATE_ITEM, max(steps),
                                  directory)
    raise CheckpointKindError(f"{role} {directory} is not a checkpoint ({_contents(directory)}); "
                              f"it must be {ACCEPTED}.")


__all__ = ["ACCEPTED", "CheckpointKindError", "CheckpointLocation", "absolute_path",
           "locate_checkpoint"]
