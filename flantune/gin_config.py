"""gin wiring at the edge: flantune's config dataclasses as configurables, and the run config.

Run configs follow t5x: macros MODEL_DIR, MIXTURE_OR_TASK_NAME, TASK_FEATURE_LENGTHS,
TRAIN_STEPS, BATCH_SIZE and INITIAL_CHECKPOINT_PATH feed ``train_config``; everything
else is a binding on the configurables registered here, e.g.
``flantune.OptimizerConfig.name = 'adamw'``; the model comes from a model gin file
(``gin_configs/models/*.gin``, which binds ``model_config.config``).
"""

from __future__ import annotations

import dataclasses

import gin

import flantune.partitioning as partitioning
from flantune.data import ablation
from flantune.decoding import DecodeConfig
from flantune.evaluation.command import EvalRun
from flantune.evaluation.during_training import evaluation_factory
from flantune.evaluation.evaluator import EvalConfig
from flantune.models import gin_registry
from flantune.peft.config import AdapterConfig, LoraConfig, PrefixConfig, PromptConfig
from flantune.preference import PreferenceConfig, PreferenceObjective
from flantune.selfinstruct import (
    FilterConfig,
    Sampling,
    SelfInstructConfig,
    register_self_instruct_task,
)
from flantune.selfinstruct.command import SelfInstructRun
from flantune.train.checkpoints import CheckpointConfig
from flantune.train.loop import TrainConfig
from flantune.train.losses import LossConfig
from flantune.train.optimizers import OptimizerConfig, ScheduleConfig
from flantune.train.step import StepConfig

for _cls in (OptimizerConfig, ScheduleConfig, LossConfig, StepConfig, CheckpointConfig,
             EvalConfig, DecodeConfig, LoraConfig, PrefixConfig, PromptConfig,
             PreferenceConfig, SelfInstructConfig, Sampling, FilterConfig):
    gin.external_configurable(_cls, module="flantune")
# Mixtures built from gin arguments, for ablations:
# MIXTURE_OR_TASK_NAME = @flantune.ablation_mixture()
for _fn in (ablation.ablation_mixture, ablation.cluster_mixture):
    gin.external_configurable(_fn, module="flantune")


@gin.configurable(module="flantune")
def train_config(model_dir: str = gin.REQUIRED, mixture_or_task_name: str = gin.REQUIRED,
                 task_feature_lengths: dict = gin.REQUIRED, train_steps: int = gin.REQUIRED,
                 batch_size: int = 128, model=None, optimizer: OptimizerConfig | None = None,
                 step: StepConfig | None = None, checkpoint: CheckpointConfig | None = None,
                 mesh: partitioning.MeshConfig | None = None, rules="data_parallel",
                 initial_checkpoint_path: str | None = None, seed: int = 0,
                 log_every_steps: int = 10, window: int = 4096, mixing: str = "exact",
                 progress: bool = True, eval: EvalConfig | None = None,
                 max_nonfinite_steps: int = 10, use_cached_tasks: bool = False,
                 eval_period: int | None = None, adapter: AdapterConfig | None = None,
                 pack: bool = True, preference: PreferenceConfig | None = None
                 ) -> TrainConfig:
    """The TrainConfig the gin config describes (the model: a gin model file's selection).

    t5x's macros, with t5x's meaning: RANDOM_SEED (``seed``; an integer, since flantune runs
    are reproducible), USE_CACHED_TASKS (False: flantune renders tasks as it trains) and
    EVAL_PERIOD (``eval_period``: the same as EVAL_EVERY_STEPS). ``preference``
    (``@flantune.PreferenceConfig()``) makes the run preference tuning (DPO, IPO, hinge)."""
    train_steps = _as_int("TRAIN_STEPS", train_steps)
    batch_size = _as_int("BATCH_SIZE", batch_size)
    if seed is None:
        raise ValueError("RANDOM_SEED = None asks t5x for a fresh, non-reproducible seed; "
                         "flantune runs are reproducible: set an integer (e.g. "
                         "--gin.RANDOM_SEED=0).")
    seed = _as_int("RANDOM_SEED", seed)
    if use_cached_tasks:
        raise ValueError("USE_CACHED_TASKS = True: flantune has no pre-cached tasks; it renders "
                         "and tokenizes examples while it trains. Set USE_CACHED_TASKS = False.")
    evaluates = eval is not None and eval.enabled
    if (eval_period or (eval is not None and eval.every_steps)) and not evaluates:
        raise ValueError(f"EVAL_PERIOD / EVAL_EVERY_STEPS = "
                         f"{eval_period or eval.every_steps} but nothing to evaluate: set "
                         "EVAL_MIXTURE_OR_TASK_NAME (held-out tasks; t5x evaluates the training "
                         "mixture's validation split, which is EVAL_MIXTURE_OR_TASK_NAME = "
                         "MIXTURE_OR_TASK_NAME here).")
    if eval_period is not None and eval is not None:
        eval_period = _as_int("EVAL_PERIOD", eval_period)
        if eval.every_steps not in (0, eval_period):
            raise ValueError(f"EVAL_PERIOD = {eval_period} and EVAL_EVERY_STEPS = "
                             f"{eval.every_steps} disagree; they are the same setting (t5x's "
                             "and flantune's name): set one.")
        eval = dataclasses.replace(eval, every_steps=eval_period)
    return TrainConfig(
        model_dir=model_dir, mixture_or_task_name=mixture_or_task_name,
        task_feature_lengths=dict(task_feature_lengths), train_steps=train_steps,
        batch_size=batch_size, model=model or _gin_model(),
        optimizer=optimizer or OptimizerConfig(),
        step=step or StepConfig(), checkpoint=checkpoint or CheckpointConfig(),
        mesh=mesh or partitioning.MeshConfig(), rules=rules,
        initial_checkpoint_path=initial_checkpoint_path, seed=seed,
        log_every_steps=log_every_steps, window=window, mixing=mixing, progress=progress,
        evaluation=evaluation_factory(eval), max_nonfinite_steps=max_nonfinite_steps,
        adapter=adapter, pack=pack,
        objective=PreferenceObjective(preference) if preference is not None else None)


def _as_int(macro: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise ValueError(f"{macro} must be an integer, got {value!r} (e.g. --gin.{macro}=1000).")
    return int(value)


def _gin_model():
    try:
        return gin_registry.model_config()
    except ValueError as err:
        raise ValueError("No model configured: add a model gin file, e.g. "
                         "--gin_file=gin_configs/models/t5_1_1_small.gin "
                         f"({err}).") from None


@gin.configurable(module="flantune")
def eval_run(checkpoint_path: str = gin.REQUIRED, output_dir: str = gin.REQUIRED,
             task_feature_lengths: dict = gin.REQUIRED, eval: EvalConfig | None = None,
             model=None, mesh: partitioning.MeshConfig | None = None,
             rules="data_parallel", adapter_path: str | None = None) -> EvalRun:
    """What ``flantune eval`` / ``flantune infer`` run (gin_configs/runs/eval.gin)."""
    eval = eval or EvalConfig()
    if not eval.enabled:
        raise ValueError("Nothing to evaluate: bind MIXTURE_OR_TASK_NAME (a task or mixture).")
    return EvalRun(checkpoint_path=str(checkpoint_path), output_dir=str(output_dir), eval=eval,
                   model=model or _gin_model(), task_feature_lengths=dict(task_feature_lengths),
                   mesh=mesh or partitioning.MeshConfig(), rules=rules,
                   adapter_path=None if adapter_path is None else str(adapter_path))


@gin.configurable(module="flantune")
def self_instruct_run(config: SelfInstructConfig = gin.REQUIRED,
                      checkpoint_path: str = gin.REQUIRED, adapter_path: str | None = None,
                      model=None, inputs_length: int = 512, batch_size: int = 8,
                      mesh: partitioning.MeshConfig | None = None,
                      rules="data_parallel") -> SelfInstructRun:
    """What ``flantune self-instruct`` runs (gin_configs/runs/self_instruct.gin)."""
    return SelfInstructRun(config=config, checkpoint_path=str(checkpoint_path),
                           model=model or _gin_model(),
                           adapter_path=None if adapter_path is None else str(adapter_path),
                           inputs_length=_as_int("SELF_INSTRUCT_INPUTS_LENGTH", inputs_length),
                           batch_size=_as_int("SELF_INSTRUCT_BATCH_SIZE", batch_size),
                           mesh=mesh or partitioning.MeshConfig(), rules=rules)


@gin.configurable(module="flantune")
def self_instruct_task(name: str = gin.REQUIRED, path: str = gin.REQUIRED,
                       holdout_every: int = 5) -> str:
    """Registers a Self-Instruct output file as the task ``name`` and returns the name:
    ``MIXTURE_OR_TASK_NAME = @flantune.self_instruct_task()`` trains on it."""
    from flantune.data.tasks import registered_flan_tasks

    if name not in {t.name for t in registered_flan_tasks()}:
        register_self_instruct_task(name, path, holdout_every=holdout_every)
    return name
