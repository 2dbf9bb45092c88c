"""Training objectives other than token cross-entropy, plugged into the same step and loop.

The train step and loop know an objective only through these protocols; flantune.preference
implements them (DPO, IPO, hinge). An objective decides how batches are built (its feature
converter), what it needs besides the policy (a reference model, or values precomputed per
step), the loss sums of a batch and the metrics made of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import jax
import numpy as np
from jax.sharding import Mesh

PyTree = Any
Batch = Mapping[str, jax.Array]
# MODEL_DIR's record of a run's objective (written by the objective; a run without one refuses
# to resume such a MODEL_DIR).
OBJECTIVE_FILE = "objective.json"


class StepObjective(Protocol):
    """What the jitted train step calls (all of it traced).

    ``reference_values`` runs before the gradient pass (its result is a constant of the loss);
    ``loss_sums`` returns summed quantities that add over microbatches, among them ``"loss"``
    and its normalizer ``"denominator"``; ``metrics`` turns the summed quantities of a whole
    batch into its metrics. A metric ``"task_sum/NAME"`` ([num_tasks]) with ``"task_count"``
    ([num_tasks]) is logged per task as ``task_NAME/TASK``.
    """

    def reference_values(self, batch: Batch, reference: PyTree | None,
                         frozen: PyTree | None) -> PyTree | None: ...

    def loss_sums(self, logits: jax.Array, batch: Batch,
                  reference_values: PyTree | None) -> dict[str, jax.Array]: ...

    def metrics(self, sums: Mapping[str, jax.Array]) -> dict[str, jax.Array]: ...


@dataclasses.dataclass
class ObjectiveContext:
    """What the loop has built when it prepares an objective (before the first step)."""

    config: Any  # the TrainConfig
    spec: Any  # the policy's ModelSpec
    base_spec: Any  # the same model without adapter (= spec without one)
    mesh: Mesh
    rules: Any
    frozen: PyTree  # an adapter run's frozen base parameters ({} otherwise)
    frozen_shardings: PyTree
    param_shardings: PyTree  # shardings of the full parameter tree (trainable + frozen)
    data: Any  # the run's BatchIterator, positioned at `start`
    start: int  # the step the run starts (or resumes) at
    show: Callable[[str], None] = print


@dataclasses.dataclass
class PreparedObjective:
    """An objective ready to train: the step's part, its extra step argument and hooks."""

    step: StepObjective
    reference: PyTree | None = None  # passed to every step (e.g. reference parameters)
    reference_shardings: PyTree | None = None
    # (local batch, step) -> the local batch with features added (e.g. precomputed values).
    add_features: Callable[[dict[str, np.ndarray], int], dict[str, np.ndarray]] | None = None
    evaluation: Any = None  # a TrainingEvaluation of the loop, or None


class TrainObjective(Protocol):
    """The loop's handle on an objective (``TrainConfig.objective``)."""

    def converter(self, family: str, *, pack: bool, mixture_or_task: str) -> Any:
        """The feature converter of the run's batches (checks the mixture's tasks)."""
        ...

    def prepare(self, context: ObjectiveContext) -> PreparedObjective: ...

    def describe(self) -> dict[str, Any]:
        """The settings, as JSON-able data (recorded in MODEL_DIR)."""
        ...


def per_task_metrics(task_names: list[str], values: Mapping[str, np.ndarray]
                     ) -> dict[str, float]:
    """``task_NAME/TASK`` scalars from an objective's ``task_sum/NAME`` and ``task_count``."""
    counts = values.get("task_count")
    if counts is None:
        return {}
    counts = np.asarray(counts)
    out = {}
    for key, sums in values.items():
        if not key.startswith("task_sum/"):
            continue
        name = key.split("/", 1)[1]
        sums = np.asarray(sums)
        out.update({f"task_{name}/{task}": float(sums[i] / counts[i])
                    for i, task in enumerate(task_names) if counts[i] > 0})
    return out
