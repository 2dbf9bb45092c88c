"""Preference tuning as a training objective of flantune's own train step and loop.

``PreferenceObjective(PreferenceConfig(...))`` goes into ``TrainConfig.objective`` (gin:
``flantune.train_config.preference = @flantune.PreferenceConfig()``): the batches hold pairs
(flantune.data.preference), the step's loss is DPO / IPO / hinge against the reference model,
and everything else is the ordinary run: sharding, microbatches, checkpoints and bit-identical
resume, adapters, gin.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from flantune.data.errors import DataError
from flantune.data.mixtures import get_provider, task_shares
from flantune.data.preference.converter import PreferenceFeatureConverter
from flantune.data.preference.tasks import preference_task_for
from flantune.models.config import config_to_dict
from flantune.preference.config import PreferenceConfig
from flantune.preference.evaluation import PreferenceEvaluation
from flantune.preference.pair_step import (
    ADAPTER_DISABLED,
    PARAMS,
    PRECOMPUTED,
    PairStep,
    reference_scorer,
)
from flantune.preference.reference import (
    Reference,
    ReferenceCache,
    check_or_write_record,
    load_reference,
    objective_record,
)
from flantune.train.objective import ObjectiveContext, PreparedObjective
from flantune.train.step import uses_dropout

PyTree = Any
Batch = Mapping[str, jax.Array]
SAVE_EVERY = 200  # precomputed batches between saves of the cache


def preference_tasks(mixture_or_task: str) -> list[str]:
    """The leaf tasks of a mixture, checked to be preference tasks."""
    names = list(task_shares(get_provider(mixture_or_task)))
    others = [n for n in names if preference_task_for(n) is None]
    if others:
        raise DataError(f"'{mixture_or_task}' has tasks that are not preference tasks: "
                        f"{others}; a preference run trains on pairs (@flantune.preference_task "
                        "with format='preference' or 'hh_preference'). Train instruction tasks "
                        "first and start the preference run from that checkpoint.")
    return names


class PreferenceObjective:
    """DPO / IPO / hinge preference tuning (flantune.train.objective.TrainObjective)."""

    def __init__(self, config: PreferenceConfig | None = None):
        self.config = config or PreferenceConfig()

    def describe(self) -> dict[str, Any]:
        return {"objective": "preference", **self.config.to_dict()}

    def converter(self, family: str, *, pack: bool, mixture_or_task: str
                  ) -> PreferenceFeatureConverter:
        if family != "decoder":
            raise DataError("Preference tuning trains decoder-only models (a pair is two "
                            "decoder sequences); the configured model is an encoder-decoder. "
                            "Use a decoder model gin (e.g. gin_configs/models/llama_tiny.gin).")
        preference_tasks(mixture_or_task)
        return PreferenceFeatureConverter(pack=pack)

    def prepare(self, context: ObjectiveContext) -> PreparedObjective:
        """Resolves the reference, records or checks it in MODEL_DIR, precomputes the reference
        log-probabilities if configured, and builds the held-out evaluation."""
        config, run = self.config, context.config
        if uses_dropout(context.spec) and jax.process_index() == 0:
            context.show("Preference tuning with dropout on (DROPOUT_RATE or LORA_DROPOUT > 0): "
                         "the policy is scored with dropout, the reference without, so they "
                         "differ before the first update and the rewards are biased; TRL "
                         "disables dropout (set both to 0.0).")
        reference = load_reference(config, context, context.show)
        # A checkpoint in MODEL_DIR is at step >= 1, so the restored start says it all.
        check_or_write_record(run.model_dir, objective_record(config, reference),
                              resuming=context.start > 0)
        num_tasks = len(context.data.task_names)
        source = ADAPTER_DISABLED if reference.kind == ADAPTER_DISABLED else PARAMS
        scoring = PairStep(config, source, reference.spec, num_tasks)
        evaluation = None
        if config.eval_split is not None:
            evaluation = PreferenceEvaluation(config, scoring, context, reference)
        if not config.precompute_reference:
            return PreparedObjective(step=scoring, reference=reference.params,
                                     reference_shardings=reference.shardings,
                                     evaluation=evaluation)
        cache = ReferenceCache(run.model_dir, ReferenceCache.make_key(
            context.data.fingerprint, run.batch_size, reference.fingerprint,
            config_to_dict(run.model)))
        cache.load()
        _precompute(cache, scoring, reference, context)
        if evaluation is not None:
            evaluation.score_reference()  # before the reference weights are let go
            evaluation.reference = None
        return PreparedObjective(step=PairStep(config, PRECOMPUTED, None, num_tasks),
                                 add_features=cache.features, evaluation=evaluation)


def _missing_anywhere(steps: range, cache: ReferenceCache) -> list[int]:
    """The steps some process's cache lacks: scoring is a collective, so every process scores
    the same steps (its own rows of them)."""
    flags = np.asarray([s not in cache.values for s in steps], np.int32)
    if jax.process_count() > 1 and flags.size:
        flags = np.asarray(multihost_utils.process_allgather(flags)).max(axis=0)
    return [s for s, missing in zip(steps, flags, strict=True) if missing]


def _precompute(cache: ReferenceCache, scoring: PairStep, reference: Reference,
                context: ObjectiveContext, save_every: int = SAVE_EVERY) -> None:
    """Scores the reference on the training batches of steps [start, TRAIN_STEPS) that a
    process's cache lacks, saving the cache every ``save_every`` batches and at the end."""
    steps = range(context.start, context.config.train_steps)
    missing = set(_missing_anywhere(steps, cache))
    if not missing:
        return
    if jax.process_index() == 0:
        context.show(f"Precomputing the reference log-probabilities of {len(missing)} training "
                     f"batches (steps {min(missing) + 1}..{max(missing) + 1}) into "
                     f"{cache.path.parent}")
    score = reference_scorer(scoring, reference, context)
    batches = context.data.fork()
    done = 0
    for step in steps:
        local = next(batches)
        if step not in missing:
            continue
        chosen, rejected = score(local)
        cache.store(step, local, chosen, rejected)
        done += 1
        if done % save_every == 0:
            cache.save()  # a preemption keeps what was scored
        if done == len(missing):
            break
    cache.save()
