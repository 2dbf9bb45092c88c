"""LoRA runs the tests start in fresh interpreters with simulated CPU devices (one JSON line
of output each; see flantune.testing.multiprocess)."""

from __future__ import annotations

import json
import sys

import flantune.partitioning as partitioning
import tests.task_fixtures  # noqa: F401
from flantune.peft import LoraConfig
from flantune.train.checkpoints import CheckpointConfig
from flantune.train.loop import TrainConfig, train
from flantune.train.optimizers import OptimizerConfig, ScheduleConfig
from tests.peft.test_lora import MODEL

MESHES = {"one_device": (partitioning.MeshConfig(data=1), "data_parallel"),
          "fsdp8": (partitioning.MeshConfig(data=1, fsdp=8), "fsdp"),
          "data4_model2": (partitioning.MeshConfig(data=4, model=2), "model_parallel_2d")}


def losses(mesh_name: str, model_dir: str, base: str) -> None:
    mesh, rules = MESHES[mesh_name]
    config = TrainConfig(
        model_dir=model_dir, mixture_or_task_name="test_mix",
        task_feature_lengths={"inputs": 48, "targets": 16}, train_steps=3, batch_size=8,
        model=MODEL, window=64, log_every_steps=1, progress=False, mesh=mesh, rules=rules,
        initial_checkpoint_path=base,
        optimizer=OptimizerConfig(name="adamw", schedule=ScheduleConfig(base_learning_rate=3e-2)),
        checkpoint=CheckpointConfig(save_interval_steps=100),
        adapter=LoraConfig(r=4, alpha=8.0, target_modules="all-linear"))
    result = train(config)
    print(json.dumps([result.losses[s] for s in sorted(result.losses)]))


if __name__ == "__main__":
    globals()[sys.argv[1]](*sys.argv[2:])
