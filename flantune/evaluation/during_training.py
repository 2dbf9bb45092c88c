"""Evaluation inside the training loop: every N steps and after the last, per-task metrics to
TensorBoard (``MODEL_DIR/eval``, keys ``TASK/METRIC``), a console table, and JSON / markdown /
predictions in ``MODEL_DIR/eval/step_N``."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
from jax.sharding import Mesh

import flantune.partitioning as partitioning
from flantune.evaluation.evaluator import EvalConfig, Evaluator
from flantune.evaluation.examples import TaskEvalError
from flantune.evaluation.results import EvalResults
from flantune.train.metric_writers import MetricWriter
from flantune.train.state import ModelSpec

PyTree = Any
EVAL_DIR = "eval"


class TrainingEval:
    """Decides when to evaluate and writes what an evaluation found."""

    def __init__(self, config: EvalConfig, spec: ModelSpec,
                 task_feature_lengths: Mapping[str, int], model_dir: str, *, mesh: Mesh,
                 rules: partitioning.LogicalAxisRules, param_shardings: PyTree,
                 every_save: bool = False):
        self.config, self.model_dir, self.every_save = config, model_dir, every_save
        self.evaluator = Evaluator(spec, config, task_feature_lengths, mesh=mesh, rules=rules,
                                   param_shardings=param_shardings)
        self.is_chief = jax.process_index() == 0
        self.writer = MetricWriter(model_dir, EVAL_DIR, enabled=self.is_chief)
        self.last: EvalResults | None = None

    @property
    def tasks(self) -> list[str]:
        return self.evaluator.tasks

    def due(self, step: int, *, last: bool, saving: bool) -> bool:
        """After the last step, every `every_steps`, and at each checkpoint when checkpoints are
        ranked by an eval metric."""
        every = self.config.every_steps
        return last or bool(every and step % every == 0) or (self.every_save and saving)

    def run(self, params: PyTree, step: int, show: Callable[[Any], None] | None = None
            ) -> dict[str, float]:
        """Evaluates, writes the results, and returns their ``TASK/METRIC`` scalars."""
        results = self.evaluator.evaluate(params, step)
        self.last = results
        scalars = results.scalars()
        self.writer.scalars(step, scalars)
        if self.is_chief:
            results.write(os.path.join(self.model_dir, EVAL_DIR, f"step_{step}"))
            if show is not None:
                show(results.table())
                for name in results.failed:
                    for message in results.tasks[name].errors:
                        show(f"[red]eval error[/red] {message}")
        return scalars

    def close(self) -> None:
        self.writer.close()


def evaluation_factory(config: EvalConfig | None) -> Callable[..., TrainingEval] | None:
    """What ``TrainConfig.evaluation`` takes for `config` (None when nothing is evaluated):
    the loop calls it with the model, mesh and shardings it has built."""
    if config is None or not config.enabled:
        return None

    def build(*args: Any, **kwargs: Any) -> TrainingEval:
        try:
            return TrainingEval(config, *args, **kwargs)
        except TaskEvalError as err:
            raise ValueError(str(err)) from None

    build.config = config  # type: ignore[attr-defined]  (what it evaluates, for inspection)
    return build
