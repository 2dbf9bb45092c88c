"""``flantune eval`` and ``flantune infer``: evaluate or predict with a saved checkpoint.

Writes into EVAL_OUTPUT_DIR: ``metrics.json`` and ``metrics.md`` (eval) and one
``predictions/TASK.jsonl`` per task with inputs, targets, prediction and score (both).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
from jax.sharding import Mesh

import flantune.partitioning as partitioning
from flantune.evaluation.evaluator import EvalConfig, Evaluator
from flantune.evaluation.results import EvalResults
from flantune.peft.hf_format import is_peft_adapter
from flantune.train.adapter_checkpoints import load_adapted_params
from flantune.train.checkpoint_kinds import CheckpointKindError, locate_checkpoint
from flantune.train.checkpoints import CheckpointError, load_initial_params
from flantune.train.state import ModelConfig, ModelSpec, placed

PyTree = Any


@dataclasses.dataclass(frozen=True)
class EvalRun:
    checkpoint_path: str
    output_dir: str
    eval: EvalConfig
    model: ModelConfig
    task_feature_lengths: dict[str, int]
    mesh: partitioning.MeshConfig = dataclasses.field(default_factory=partitioning.MeshConfig)
    rules: str | tuple = "data_parallel"
    # An adapter on the base CHECKPOINT_PATH: an adapter run (MODEL_DIR or step) or a peft
    # adapter directory (flantune.train.adapter_checkpoints).
    adapter_path: str | None = None


def checkpoint_step(path: str) -> int | None:
    """The training step of a checkpoint path: a step directory's number, or a MODEL_DIR's
    newest step; None for other checkpoints (a parameter or Hugging Face checkpoint)."""
    try:
        return locate_checkpoint(path, "CHECKPOINT_PATH").step
    except CheckpointKindError as err:
        raise CheckpointError(str(err)) from None


def load_params(checkpoint_path: str, adapter_path: str | None, model: ModelConfig,
                mesh: Mesh, rules: partitioning.LogicalAxisRules
                ) -> tuple[ModelSpec, PyTree, PyTree]:
    """The model spec, parameters placed on ``mesh`` and their shardings, from a flantune or
    Hugging Face checkpoint, with an adapter (an adapter run or a peft directory) on top when
    ``adapter_path`` is given. Call inside ``partitioning.activation_rules(rules, mesh)``."""
    def shardings_of(spec: ModelSpec):
        return partitioning.param_shardings(spec.abstract_state, mesh, rules)

    if adapter_path is not None:
        return load_adapted_params(checkpoint_path, adapter_path, model, shardings_of)
    spec = ModelSpec.from_config(model)
    shardings = shardings_of(spec)
    params = load_initial_params(checkpoint_path, placed(spec.abstract_params(), shardings),
                                 role="CHECKPOINT_PATH", model=model)
    return spec, params, shardings


def run(config: EvalRun, *, infer: bool = False) -> tuple[EvalResults, dict[str, str]]:
    """Loads the checkpoint's parameters onto the mesh, evaluates (or only predicts), and writes
    the outputs; returns the results and the paths written."""
    rules = partitioning.axis_rules(config.rules) if isinstance(config.rules, str) \
        else tuple(config.rules)
    mesh = partitioning.make_mesh(config.mesh)
    with partitioning.activation_rules(rules, mesh):
        spec, params, shardings = load_params(config.checkpoint_path, config.adapter_path,
                                              config.model, mesh, rules)
        evaluator = Evaluator(spec, config.eval, config.task_feature_lengths, mesh=mesh,
                              rules=rules, param_shardings=shardings)
        step_of = config.checkpoint_path if config.adapter_path is None else config.adapter_path
        step = None if is_peft_adapter(step_of) else checkpoint_step(step_of)
        results = evaluator.evaluate(params, step,
                                     compute_metrics=not infer)
    paths: dict[str, str] = {}
    if jax.process_index() == 0:
        if infer:
            from flantune.evaluation.results import write_predictions

            paths["predictions"] = write_predictions(results, config.output_dir)
        else:
            paths = results.write(config.output_dir)
    return results, paths
