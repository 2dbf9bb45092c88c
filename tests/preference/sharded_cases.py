"""Preference runs the sharded tests start in fresh interpreters with simulated CPU devices.

Each function prints one JSON value as its last stdout line (see flantune.testing.multiprocess).
"""

from __future__ import annotations

import json
import sys

import jax

import flantune
import flantune.partitioning as partitioning
from flantune.data import JsonlSource
from flantune.data.hf_vocabulary import HfTokenizerVocabulary
from flantune.data.vocabulary import demo_chat_tokenizer_path
from flantune.models import DecoderConfig
from flantune.preference import PreferenceConfig, PreferenceObjective
from flantune.train.checkpoints import CheckpointConfig
from flantune.train.loop import TrainConfig, train
from flantune.train.optimizers import OptimizerConfig, ScheduleConfig

MODEL = DecoderConfig(vocab_size=8000, emb_dim=32, num_heads=4, num_kv_heads=2, head_dim=8,
                      mlp_dim=64, num_layers=2)
MESHES = {  # name: (mesh config, rules preset); one_device runs in a process with one device
    "one_device": (partitioning.MeshConfig(data=1), "data_parallel"),
    "fsdp8": (partitioning.MeshConfig(data=1, fsdp=8), "fsdp"),
    "data4_model2": (partitioning.MeshConfig(data=4, model=2), "model_parallel_2d"),
    "data8": (partitioning.MeshConfig(data=8), "data_parallel"),  # the two-process runs'
}
TASK = "sharded_pairs"


def write_pairs(path: str) -> None:
    with open(path, "w") as f:
        for i in range(48):
            f.write(json.dumps({
                "prompt": [{"role": "user", "content": f"What is {i} plus one?"}],
                "chosen": [{"role": "assistant", "content": f"{i + 1}"}],
                "rejected": [{"role": "assistant", "content": f"Perhaps {i + 3}."}]}) + "\n")


def _register(path: str) -> None:
    @flantune.preference_task(TASK, vocabulary=HfTokenizerVocabulary(demo_chat_tokenizer_path()),
                              template="llama2")
    def records(split):
        return JsonlSource(path, format="preference", task=TASK)


def _run(path: str, model_dir: str, mesh: str, precompute: bool) -> dict:
    _register(path)
    mesh_config, rules = MESHES[mesh]
    logged: dict[int, dict] = {}
    train(TrainConfig(
        model_dir=model_dir, mixture_or_task_name=TASK, task_feature_lengths={"targets": 64},
        train_steps=3, batch_size=8, model=MODEL, window=64, log_every_steps=1, progress=False,
        mesh=mesh_config, rules=rules,
        optimizer=OptimizerConfig(name="adamw", schedule=ScheduleConfig(base_learning_rate=3e-3)),
        checkpoint=CheckpointConfig(save_interval_steps=3, async_save=False),
        objective=PreferenceObjective(PreferenceConfig(precompute_reference=precompute,
                                                       eval_split="validation"))),
        on_step=lambda step, metrics: logged.__setitem__(step, metrics))
    held_out = json.load(open(f"{model_dir}/eval_preference/step_3.json"))
    return {"losses": [logged[s]["loss"] for s in (1, 2, 3)],
            "accuracy": [logged[s]["rewards/accuracy"] for s in (1, 2, 3)],
            "held_out_loss": held_out["all/loss"]}


def one_device(path: str, directory: str) -> None:
    print(json.dumps(_run(path, directory, "one_device", False)))


def across_meshes(path: str, directory: str) -> None:
    """The same run on 8 devices as data x model (the reference in the step), and fully
    sharded (fsdp) with the reference precomputed."""
    out = {name: _run(path, f"{directory}/{name}", name, False) for name in ("data4_model2",)}
    out["fsdp8_precomputed"] = _run(path, f"{directory}/fsdp8_pre", "fsdp8", True)
    print(json.dumps(out))


def two_processes(path: str, directory: str, precompute: str) -> None:
    """One of 2 processes x 4 devices, data-parallel (each process reads its own part of the
    stream, so the batches differ from one process's)."""
    partitioning.initialize_distributed()
    result = _run(path, directory, "data8", precompute == "precompute")
    print(json.dumps({**result, "process": jax.process_index()}))


if __name__ == "__main__":
    globals()[sys.argv[1]](*sys.argv[2:])
