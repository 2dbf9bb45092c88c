"""Code the sharded-training tests run in fresh interpreters with simulated CPU devices.

Each function prints one JSON value as its last stdout line (see flantune.testing.multiprocess).
"""

from __future__ import annotations

import json
import sys

import jax
import numpy as np

import flantune.partitioning as partitioning
import tests.task_fixtures  # noqa: F401
from flantune.data import BatchIterator
from flantune.models import T5Config
from flantune.train.checkpoints import CheckpointConfig, Checkpointer
from flantune.train.optimizers import OptimizerConfig, ScheduleConfig, make_optimizer
from flantune.train.state import ModelSpec, abstract_state, init_state, state_shardings
from flantune.train.step import StepConfig, make_train_step

MODEL = T5Config(vocab_size=8000, emb_dim=32, num_heads=4, head_dim=8, mlp_dim=64,
                 num_encoder_layers=2, num_decoder_layers=2)
LENGTHS = {"inputs": 48, "targets": 16}
GLOBAL_BATCH = 8
MESHES = {  # name: (mesh config, rules preset)
    "one_device": (partitioning.MeshConfig(data=1), "data_parallel"),
    "data8": (partitioning.MeshConfig(data=8), "data_parallel"),
    "data4_model2": (partitioning.MeshConfig(data=4, model=2), "model_parallel_2d"),
    "fsdp8": (partitioning.MeshConfig(data=1, fsdp=8), "fsdp"),
}


class Run:
    """A model, optimizer and jitted step on one mesh."""

    def __init__(self, mesh_name: str):
        mesh_config, preset = MESHES[mesh_name]
        devices = jax.devices()[:1] if mesh_name == "one_device" else None
        self.mesh = partitioning.make_mesh(mesh_config, devices)
        self.rules = partitioning.axis_rules(preset)
        self.spec = ModelSpec.from_config(MODEL)
        self.optimizer, schedule = make_optimizer(OptimizerConfig(
            name="adamw", schedule=ScheduleConfig(base_learning_rate=1e-3)))
        with partitioning.activation_rules(self.rules, self.mesh):
            self.shardings = state_shardings(self.spec, self.optimizer, self.mesh, self.rules)
            self.step = jax.jit(
                make_train_step(self.spec, self.optimizer, schedule, StepConfig()),
                in_shardings=(self.shardings, partitioning.batch_sharding(self.mesh)),
                out_shardings=(self.shardings, None))

    def init(self):
        return init_state(self.spec, self.optimizer, self.shardings, seed=0)

    def run(self, state, local_batches):
        losses = []
        with partitioning.activation_rules(self.rules, self.mesh):
            for local in local_batches:
                state, metrics = self.step(state, partitioning.global_batch(local, self.mesh))
                losses.append(float(metrics["loss"]))
        return state, losses


def global_batches(count: int, processes: int = 1) -> list[dict[str, np.ndarray]]:
    """``count`` global batches: the concatenated batches of ``processes`` data processes."""
    iterators = [BatchIterator("test_mix", task_feature_lengths=LENGTHS, window=64, seed=0,
                               batch_size=GLOBAL_BATCH // processes, process_index=i,
                               process_count=processes) for i in range(processes)]
    out = []
    for _ in range(count):
        parts = [next(it) for it in iterators]
        out.append({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
    return out


def losses_across_meshes() -> None:
    batches = global_batches(3)
    result = {}
    for name in MESHES:
        run = Run(name)
        _, result[name] = run.run(run.init(), batches)
    print(json.dumps(result))


def restore_on_other_meshes(directory: str) -> None:
    batches = global_batches(3)
    saver = Run("fsdp8")
    state, _ = saver.run(saver.init(), batches[:2])
    checkpointer = Checkpointer(directory, CheckpointConfig(async_save=False))
    checkpointer.save(2, state, force=True)
    checkpointer.wait_until_finished()
    _, continued = saver.run(state, batches[2:])
    result = {"fsdp8": continued[0]}
    for name in ("data4_model2", "one_device"):
        run = Run(name)
        target = abstract_state(run.spec, run.optimizer, run.shardings)
        restored, _ = checkpointer.restore(2, target)
        _, losses = run.run(restored, batches[2:])
        result[name] = losses[0]
    checkpointer.close()
    print(json.dumps(result))


def multiprocess_losses() -> None:
    """In each of 2 processes (4 devices each): this process's rows of 3 global batches."""
    partitioning.initialize_distributed()
    process, processes = jax.process_index(), jax.process_count()
    iterator = BatchIterator("test_mix", task_feature_lengths=LENGTHS, window=64, seed=0,
                             batch_size=GLOBAL_BATCH // processes, process_index=process,
                             process_count=processes)
    run = Run("data8")
    _, losses = run.run(run.init(), [next(iterator) for _ in range(3)])
    print(json.dumps(losses))


def single_process_reference() -> None:
    """The same 3 global batches (both processes' rows) on 1 process x 8 devices."""
    run = Run("data8")
    _, losses = run.run(run.init(), global_batches(3, processes=2))
    print(json.dumps(losses))


if __name__ == "__main__":
    globals()[sys.argv[1]](*sys.argv[2:])
