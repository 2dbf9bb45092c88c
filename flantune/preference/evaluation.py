"""Held-out preference pairs scored during training: loss, reward accuracy and margins per task.

Every pair of ``PreferenceConfig.eval_split`` of the mixture's preference tasks is scored once,
in record order, against the run's reference (whose log-probabilities are computed once, on the
first evaluation, or while the reference is loaded when they are precomputed). Results go to
TensorBoard (``MODEL_DIR/eval_preference``, keys ``TASK/METRIC`` and ``all/METRIC``), the
console and ``MODEL_DIR/eval_preference/step_N.json``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

import flantune.partitioning as partitioning
from flantune.data.errors import DataError
from flantune.data.preference.converter import PreferenceFeatureConverter
from flantune.data.preference.tasks import preference_task_for
from flantune.evaluation.scoring import process_rows
from flantune.preference.config import PreferenceConfig
from flantune.preference.pair_step import PRECOMPUTED, PairStep, reference_scorer
from flantune.preference.reference import Reference
from flantune.train.metric_writers import MetricWriter
from flantune.train.objective import ObjectiveContext
from flantune.train.step import model_inputs

PyTree = Any
EVAL_DIR = "eval_preference"
TASK_METRICS = ("loss", "reward_accuracy", "margin")


class PreferenceEvaluation:
    """A TrainingEvaluation of the loop (see flantune.train.loop) over held-out pairs."""

    def __init__(self, config: PreferenceConfig, scoring: PairStep, context: ObjectiveContext,
                 reference: Reference | None):
        run, mesh = context.config, context.mesh
        self.config, self.scoring, self.context, self.reference = config, scoring, context, \
            reference
        self.model_dir = run.model_dir
        split = config.eval_split
        names = context.data.task_names
        chosen = [(i, n) for i, n in enumerate(names) if split in preference_task_for(n).splits]
        if not chosen:
            raise DataError(f"PreferenceConfig.eval_split = {split!r}, but none of the tasks "
                            f"{names} has that split; name a split they have, or set "
                            "eval_split = None to train without the held-out evaluation.")
        self.tasks = [n for _, n in chosen]
        self._task_ids = [i for i, _ in chosen]
        examples = []
        for index, name in chosen:
            task = preference_task_for(name)
            for record in range(task.num_records(split)):
                example = task.example(split, record)
                example["task_index"] = index
                examples.append(example)
        rows, self.stats = PreferenceFeatureConverter(pack=run.pack).convert(
            examples, run.task_feature_lengths)
        if not self.stats.rows:
            raise DataError(f"PreferenceConfig.eval_split = {split!r}: no held-out pair of "
                            f"{self.tasks} fits the rows (of {len(examples)} pairs: "
                            f"{self.stats.truncation_summary() or 'none'}); raise "
                            "TASK_FEATURE_LENGTHS['targets'] or set eval_split = None.")
        size = config.eval_batch_size or run.batch_size
        partitioning.check_batch_size(size, mesh)
        total = -(-self.stats.rows // size) * size
        padded = {k: np.concatenate([v, np.zeros((total - v.shape[0], *v.shape[1:]), v.dtype)])
                  for k, v in rows.items()}
        local = process_rows(size, mesh)
        self.batches = [{k: v[start:start + size][local] for k, v in padded.items()}
                        for start in range(0, total, size)]
        self._scored = False
        self.is_chief = jax.process_index() == 0
        self.writer = MetricWriter(self.model_dir, EVAL_DIR, enabled=self.is_chief)
        spec, step = context.spec, PairStep(config, PRECOMPUTED, None, len(names))

        def evaluate(params: PyTree, batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
            logits = spec.merge(params)(**model_inputs(batch, "decoder"), deterministic=True)
            return step.loss_sums(logits, batch, None)

        self._evaluate = jax.jit(evaluate, in_shardings=(
            context.param_shardings, partitioning.batch_sharding(mesh)))

    def score_reference(self) -> None:
        """The reference's log-probabilities of every held-out pair (once)."""
        if self._scored:
            return
        score = reference_scorer(self.scoring, self.reference, self.context)
        for batch in self.batches:
            batch["reference_chosen_logps"], batch["reference_rejected_logps"] = score(batch)
        self._scored = True

    def due(self, step: int, *, last: bool, saving: bool) -> bool:
        every = self.config.eval_every_steps
        return last or bool(every and step % every == 0)

    def run(self, params: PyTree, step: int, show: Callable[[Any], None] | None = None
            ) -> dict[str, float]:
        """Scores the held-out pairs with ``params`` (the full tree); returns the scalars."""
        self.score_reference()
        totals: dict[str, np.ndarray] = {}
        for batch in self.batches:
            sums = jax.device_get(self._evaluate(
                params, partitioning.global_batch(batch, self.context.mesh)))
            for key, value in sums.items():
                totals[key] = totals.get(key, 0) + np.asarray(value, np.float64)
        scalars = self.scalars(totals)
        self.writer.scalars(step, scalars)
        if self.is_chief:
            directory = os.path.join(self.model_dir, EVAL_DIR)
            os.makedirs(directory, exist_ok=True)
            with open(os.path.join(directory, f"step_{step}.json"), "w") as f:
                json.dump(scalars, f, indent=1)
            if show is not None:
                show(self.table(step, scalars, totals))
        return scalars

    def scalars(self, totals: Mapping[str, np.ndarray]) -> dict[str, float]:
        pairs = max(float(totals["denominator"]), 1.0)
        out = {"all/loss": float(totals["loss"]) / pairs,
               "all/reward_accuracy": float(totals["reward_accuracy"]) / pairs,
               "all/margin": float(totals["margin"]) / pairs,
               "all/chosen_reward": float(totals["chosen_reward"]) / pairs,
               "all/rejected_reward": float(totals["rejected_reward"]) / pairs,
               "all/pairs": float(totals["denominator"])}
        counts = totals["task_count"]
        for index, name in zip(self._task_ids, self.tasks, strict=True):
            if counts[index] > 0:
                for metric in TASK_METRICS:
                    out[f"{name}/{metric}"] = float(totals[f"task_sum/{metric}"][index]
                                                    / counts[index])
                out[f"{name}/pairs"] = float(counts[index])
        return out

    def table(self, step: int, scalars: Mapping[str, float],
              totals: Mapping[str, np.ndarray]) -> str:
        lines = [f"Held-out preference pairs ({self.config.eval_split}, step {step}):"]
        for name in [*self.tasks, "all"]:
            if f"{name}/pairs" not in scalars:
                continue
            lines.append(f"  {name}: loss {scalars[f'{name}/loss']:.4f}, reward accuracy "
                         f"{scalars[f'{name}/reward_accuracy']:.3f}, margin "
                         f"{scalars[f'{name}/margin']:.4f} ({int(scalars[f'{name}/pairs'])} "
                         "pairs)")
        cut = self.stats.truncation_summary()
        if cut:
            lines.append(f"  (held-out data: {cut})")
        return "\n".join(lines)

    def close(self) -> None:
        self.writer.close()
