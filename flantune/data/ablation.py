"""Mixtures derived from a base mixture for ablations, all from arguments (so gin can sweep them).

``ablation_mixture`` rebuilds a base mixture of templated tasks with explicit knobs: held-out
clusters, templates per task, the zero-shot / few-shot share, the options / no-options share,
examples-proportional rates with a cap and temperature, or explicit per-task weights. Every
rate is a plain number computed here, so the realized mixture is exact and easy to check.
``cluster_mixture`` gives the evaluation side: the zero-shot variants of some clusters' tasks.

Both register a mixture under a name derived from their arguments and return that name, so a
gin file can write ``MIXTURE_OR_TASK_NAME = @flantune.ablation_mixture()``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence

import seqio

from flantune.data.errors import DataError
from flantune.data.mixtures import examples_proportional, leaf_tasks, register_mixture
from flantune.data.seeding import stable_hash
from flantune.data.tasks import FlanTask, flan_task_for, register
from flantune.data.variants import Variant

ZERO_SHOT = (Variant.ZS_OPT, Variant.ZS_NOOPT)
FEW_SHOT = (Variant.FS_OPT, Variant.FS_NOOPT)


def base_tasks(base: str | Sequence[str]) -> list[FlanTask]:
    """The templated tasks behind a mixture's (or a list of names') leaf tasks, by name."""
    names = [base] if isinstance(base, str) else list(base)
    found: dict[str, FlanTask] = {}
    for name in names:
        for task in leaf_tasks(name):
            entry = flan_task_for(task.name)
            if entry is None:
                raise DataError(
                    f"'{name}' contains task '{task.name}', which is not a templated flantune "
                    "task; ablation mixtures are built from @flantune.task definitions.")
            found[entry[0].name] = entry[0]
    return [found[n] for n in sorted(found)]


def clusters_of(tasks: Sequence[FlanTask]) -> dict[str, list[str]]:
    """Cluster label -> task names (tasks without a label fall under ``"none"``)."""
    clusters: dict[str, list[str]] = {}
    for task in tasks:
        clusters.setdefault(task.cluster or "none", []).append(task.name)
    return clusters


def _select(tasks: list[FlanTask], base, include: Sequence[str] | None,
            exclude: Sequence[str]) -> list[FlanTask]:
    known = clusters_of(tasks)
    for cluster in [*(include or ()), *exclude]:
        if cluster not in known:
            raise DataError(f"'{base}' has no cluster '{cluster}'; its clusters are "
                            f"{sorted(known)}.")
    chosen = [t for t in tasks if (include is None or (t.cluster or "none") in include)
              and (t.cluster or "none") not in exclude]
    if not chosen:
        raise DataError(f"No task of '{base}' is left after include_clusters={include} and "
                        f"exclude_clusters={list(exclude)}.")
    return chosen


def with_templates(task: FlanTask, count: int | None) -> FlanTask:
    """``task`` restricted to its first ``count`` templates, registered as ``{name}_t{count}``."""
    if count is None or count >= len(task.templates):
        return task
    if count < 1:
        raise DataError(f"templates_per_task must be at least 1, got {count}.")
    derived = dataclasses.replace(task, name=f"{task.name}_t{count}",
                                  templates=task.templates[:count])
    return register(derived)


def _variant_weights(task: FlanTask, zero_shot_share: float, options_share: float
                     ) -> dict[Variant, float]:
    """Each of the task's variants' share of the task's weight."""
    weights: dict[Variant, float] = {}
    for group, share in ((ZERO_SHOT, zero_shot_share), (FEW_SHOT, 1.0 - zero_shot_share)):
        present = [v for v in group if v in task.variants]
        if share <= 0 or not present:
            continue
        if len(present) == 1:
            weights[present[0]] = share
        else:
            for variant in present:
                weights[variant] = share * (options_share if variant.with_options
                                            else 1.0 - options_share)
    total = sum(weights.values())
    if total <= 0:
        return {}
    return {v: w / total for v, w in weights.items() if w > 0}


def _check_share(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise DataError(f"{name} must lie in [0, 1], got {value}.")
    return value


def ablation_mixture(base: str | Sequence[str] = "demo", *,
                     include_clusters: Sequence[str] | None = None,
                     exclude_clusters: Sequence[str] = (),
                     templates_per_task: int | None = None,
                     zero_shot_share: float = 1.0, options_share: float = 0.5,
                     cap: int | None = 3000, temperature: float = 1.0,
                     rates: Mapping[str, float] | None = None,
                     name: str | None = None) -> str:
    """Registers the training mixture these knobs describe and returns its name.

    Args:
      base: a mixture (or list of mixtures/tasks) whose templated tasks are the pool.
      include_clusters / exclude_clusters: keep only / drop tasks of these clusters.
      templates_per_task: use each task's first N templates (None: all).
      zero_shot_share: share of zero-shot variants; the rest is few-shot (where a task has them).
      options_share: within zero- or few-shot, the share of the with-options variant for tasks
        that have both.
      cap, temperature: examples-proportional task rates (FLAN: cap 3000).
      rates: explicit per-task weights by base task name (overrides cap/temperature for those).
      name: the mixture name (default: derived from the arguments).
    """
    zero_shot_share = _check_share("zero_shot_share", zero_shot_share)
    options_share = _check_share("options_share", options_share)
    include = None if include_clusters is None else list(include_clusters)
    tasks = _select(base_tasks(base), base, include, list(exclude_clusters))
    explicit = dict(rates or {})
    unknown = sorted(set(explicit) - {t.name for t in tasks})
    if unknown:
        raise DataError(f"rates name tasks not in the ablation mixture: {unknown}; its tasks are "
                        f"{[t.name for t in tasks]}.")
    proportional = examples_proportional(cap, temperature=temperature)
    members: list[tuple[str, float]] = []
    for task in tasks:
        derived = with_templates(task, templates_per_task)
        weights = _variant_weights(derived, zero_shot_share, options_share)
        if not weights:
            continue
        # The task's rate from its zero-shot variant's train size (every variant has the same).
        task_rate = explicit.get(task.name)
        if task_rate is None:
            any_variant = derived.task_name(next(iter(weights)))
            task_rate = float(proportional(seqio.get_mixture_or_task(any_variant)))
        members += [(derived.task_name(v), task_rate * w) for v, w in sorted(
            weights.items(), key=lambda item: item[0].value)]
    if not members:
        raise DataError(f"The ablation of '{base}' has no variant with a positive share "
                        f"(zero_shot_share={zero_shot_share}).")
    arguments = {"base": base, "include": include, "exclude": sorted(exclude_clusters),
                 "templates": templates_per_task, "zero_shot": zero_shot_share,
                 "options": options_share, "cap": cap, "temperature": temperature,
                 "rates": sorted(explicit.items())}
    digest = stable_hash(json.dumps(arguments, sort_keys=True)) & 0xFFFFFFFFFFFF
    mixture_name = name or f"ablation_{digest:012x}"
    register_mixture(mixture_name, members)
    return mixture_name


def cluster_mixture(base: str | Sequence[str] = "demo", *, clusters: Sequence[str],
                    variant: str = "zsnoopt", name: str | None = None) -> str:
    """Registers the ``variant`` tasks (default zero-shot, no options) of ``clusters``' tasks,
    equally weighted, for evaluation; returns the mixture name."""
    if not clusters:
        raise DataError("cluster_mixture needs at least one cluster.")
    chosen = Variant(variant)
    tasks = _select(base_tasks(base), base, list(clusters), [])
    members = []
    for task in tasks:
        picked = chosen if chosen in task.variants else task.default_variant
        members.append((task.task_name(picked), 1.0))
    mixture_name = name or f"clusters_{'_'.join(sorted(clusters))}_{chosen.value}"
    register_mixture(mixture_name, members)
    return mixture_name
