"""Training: optimizers, losses, the sharded train step, checkpoints and the loop."""

from flantune.train.checkpoints import (
    CheckpointConfig,
    Checkpointer,
    CheckpointError,
    load_initial_params,
)
from flantune.train.loop import TrainConfig, TrainError, TrainResult, train
from flantune.train.losses import LossConfig, LossNormalization
from flantune.train.optimizers import OptimizerConfig, ScheduleConfig, make_optimizer
from flantune.train.state import ModelSpec, init_state, state_shardings
from flantune.train.step import StepConfig, make_train_step

__all__ = [
    "CheckpointConfig", "CheckpointError", "Checkpointer", "LossConfig", "LossNormalization",
    "ModelSpec", "OptimizerConfig", "ScheduleConfig", "StepConfig", "TrainConfig", "TrainError",
    "TrainResult", "init_state", "load_initial_params", "make_optimizer", "make_train_step",
    "state_shardings", "train",
]
