"""The train step's part of preference tuning (a flantune.train.objective.StepObjective) and the
reference's log-probabilities of local batches, shared by training, precomputation and the
held-out evaluation."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax

import flantune.partitioning as partitioning
from flantune.evaluation.scoring import gather, process_rows
from flantune.preference.config import PreferenceConfig
from flantune.preference.losses import (
    REFERENCE_FEATURES,
    pair_log_probs,
    pair_metrics,
    pair_sums,
)
from flantune.preference.reference import Reference
from flantune.train.objective import ObjectiveContext
from flantune.train.state import ModelSpec
from flantune.train.step import model_inputs

PyTree = Any
Batch = Mapping[str, jax.Array]
ADAPTER_DISABLED, PARAMS, PRECOMPUTED = "adapter_disabled", "params", "precomputed"


@dataclasses.dataclass(frozen=True)
class PairStep:
    """The step's part of the objective (flantune.train.objective.StepObjective).

    ``source``: where the reference log-probabilities come from: ``adapter_disabled`` (the
    frozen base, scored by ``reference_spec``), ``params`` (the step's ``reference`` argument)
    or ``precomputed`` (the batch's reference features).
    """

    config: PreferenceConfig
    source: str
    reference_spec: ModelSpec | None
    num_tasks: int

    def reference_values(self, batch: Batch, reference: PyTree | None,
                         frozen: PyTree | None) -> PyTree | None:
        if self.source == PRECOMPUTED:
            return None
        params = frozen if self.source == ADAPTER_DISABLED else reference
        model = self.reference_spec.merge(params)
        logits = model(**model_inputs(batch, "decoder"), deterministic=True)
        scored = pair_log_probs(logits, batch)
        return {"chosen": scored["chosen"], "rejected": scored["rejected"]}

    def loss_sums(self, logits: jax.Array, batch: Batch, reference_values: PyTree | None
                  ) -> dict[str, jax.Array]:
        policy = pair_log_probs(logits, batch)
        if reference_values is None:
            missing = [k for k in REFERENCE_FEATURES if k not in batch]
            if missing:
                raise ValueError(f"the batch lacks the precomputed reference features {missing}")
            chosen, rejected = (batch[k] for k in REFERENCE_FEATURES)
        else:
            chosen, rejected = reference_values["chosen"], reference_values["rejected"]
        return pair_sums(policy, chosen, rejected, self.config, self.num_tasks)

    def metrics(self, sums: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
        return pair_metrics(sums)


def reference_scorer(scoring: PairStep, reference: Reference, context: ObjectiveContext):
    """``score(local_batch) -> (chosen, rejected)``: the reference's log-probabilities of this
    process's rows, [rows, pair slots] numpy arrays."""
    mesh = context.mesh
    if reference.params is None:  # the adapter run's frozen base
        weights, shardings = context.frozen, context.frozen_shardings
        fn = jax.jit(lambda w, batch: scoring.reference_values(batch, None, w),
                     in_shardings=(shardings, partitioning.batch_sharding(mesh)))
    else:
        weights, shardings = reference.params, reference.shardings
        fn = jax.jit(lambda w, batch: scoring.reference_values(batch, w, None),
                     in_shardings=(shardings, partitioning.batch_sharding(mesh)))

    def score(local: Mapping[str, Any]):
        batch = partitioning.global_batch(local, mesh)
        values = fn(weights, batch)
        rows = process_rows(batch["decoder_target_tokens"].shape[0], mesh)
        return gather(values["chosen"])[rows], gather(values["rejected"])[rows]

    return score
